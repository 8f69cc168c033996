"""Prefix KV cache off vs on (see joulepath.bench.caching). `python benchmarks/caching.py [--quick]`."""

import sys

from joulepath.bench.caching import main

if __name__ == "__main__":
    sys.exit(main())
