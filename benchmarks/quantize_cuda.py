"""Quantized decode on a CUDA GPU (joulepath.bench.quantize_cuda). `python benchmarks/quantize_cuda.py [--quick]`."""

import sys

from joulepath.bench.quantize_cuda import main

if __name__ == "__main__":
    sys.exit(main())
