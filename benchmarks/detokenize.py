"""Per-token detokenizing cost, whole re-decode vs incremental (see joulepath.bench.detokenize).
`python benchmarks/detokenize.py [--quick]`."""

import sys

from joulepath.bench.detokenize import main

if __name__ == "__main__":
    sys.exit(main())
