"""Lookup probe for issue 12: training mixes vs the golden lookup's key match (see joulepath.bench.lookup_probe).
`python benchmarks/lookup_probe.py [--quick] [--arm NAME:ECHO:LO-HI ...]`."""

import sys

from joulepath.bench.lookup_probe import main

if __name__ == "__main__":
    sys.exit(main())
