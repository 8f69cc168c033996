"""Speculative decoding off vs on (see joulepath.bench.speculative). `python benchmarks/speculative.py [--quick]`."""

import sys

from joulepath.bench.speculative import main

if __name__ == "__main__":
    sys.exit(main())
