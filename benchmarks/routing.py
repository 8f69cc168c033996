"""Tiered processing: router and cascade vs always-large (see joulepath.bench.routing).
`python benchmarks/routing.py [--quick]`."""

import sys

from joulepath.bench.routing import main

if __name__ == "__main__":
    sys.exit(main())
