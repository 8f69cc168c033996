"""Profiler attribution and overhead (see joulepath.bench.profile). `python benchmarks/profile.py [--quick]`."""

import sys

from joulepath.bench.profile import main

if __name__ == "__main__":
    sys.exit(main())
