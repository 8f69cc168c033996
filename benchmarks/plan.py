"""The AI-factory planner on the default workload vs a common default deployment
(see joulepath.bench.plan). `python benchmarks/plan.py [--quick]`."""

import sys

from joulepath.bench.plan import main

if __name__ == "__main__":
    sys.exit(main())
