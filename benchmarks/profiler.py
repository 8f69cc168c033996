"""Profiler attribution and overhead (see joulepath.bench.profile). `python benchmarks/profiler.py [--quick]`.

Not named profile.py: run from this folder, that would shadow the standard library's `profile` module.
Results go to benchmarks/results/profile.json."""

import sys

from joulepath.bench.profile import main

if __name__ == "__main__":
    sys.exit(main())
