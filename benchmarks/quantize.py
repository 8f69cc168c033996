"""Quantization and sparsity levers vs fp32 and transformers int8 (see joulepath.bench.quantize).
`python benchmarks/quantize.py [--quick] [--threads N]`."""

import sys

from joulepath.bench.quantize import main

if __name__ == "__main__":
    sys.exit(main())
