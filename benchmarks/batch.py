"""Continuous batching vs one at a time (see joulepath.bench.batch). `python benchmarks/batch.py [--quick]`."""

import sys

from joulepath.bench.batch import main

if __name__ == "__main__":
    sys.exit(main())
