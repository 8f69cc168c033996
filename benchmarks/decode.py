"""Batch-1 decode benchmark (see joulepath.bench.decode). `python benchmarks/decode.py [--quick]`."""

import sys

from joulepath.bench.decode import main

if __name__ == "__main__":
    sys.exit(main())
