"""The CDU flow as a cooling-MPC action on a direct-to-chip liquid plant (see joulepath.bench.control_liquid).
`python benchmarks/control_liquid.py [--quick]`."""

import sys

from joulepath.bench.control_liquid import main

if __name__ == "__main__":
    sys.exit(main())
