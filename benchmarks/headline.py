"""Brute force vs every lever on the default scenario (see joulepath.bench.headline).
`python benchmarks/headline.py [--quick]`."""

import sys

from joulepath.bench.headline import main

if __name__ == "__main__":
    sys.exit(main())
