"""Cooling MPC, forecasts and the controlled twin's speed (see joulepath.bench.control).
`python benchmarks/control.py [--quick]`."""

import sys

from joulepath.bench.control import main

if __name__ == "__main__":
    sys.exit(main())
