"""Self-distilled multi-token heads vs the shipped ones (see joulepath.bench.mtp_distill).
`python benchmarks/mtp_distill.py [--quick] [--write]`."""

import sys

from joulepath.bench.mtp_distill import main

if __name__ == "__main__":
    sys.exit(main())
