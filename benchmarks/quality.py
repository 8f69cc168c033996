"""Quality benchmark (see joulepath.bench.quality). `python benchmarks/quality.py [--quick]`."""

import sys

from joulepath.bench.quality import main

if __name__ == "__main__":
    sys.exit(main())
