"""Carbon- and cost-aware shifting with a battery, power caps and oversubscription (see joulepath.bench.grid).
`python benchmarks/grid.py [--quick]`."""

import sys

from joulepath.bench.grid import main

if __name__ == "__main__":
    sys.exit(main())
