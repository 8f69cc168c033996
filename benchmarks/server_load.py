"""`joulepath serve` under 200 streaming clients, its added latency, and schemathesis (see
joulepath.bench.server_load). `python benchmarks/server_load.py [--quick]`."""

import sys

from joulepath.bench.server_load import main

if __name__ == "__main__":
    sys.exit(main())
