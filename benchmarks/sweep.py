"""Facility-year sweeps serial vs process pool (vs Ray), and the planner's regret on measured data
(see joulepath.bench.sweep). `python benchmarks/sweep.py [--quick]`."""

import sys

from joulepath.bench.sweep import main

if __name__ == "__main__":
    sys.exit(main())
