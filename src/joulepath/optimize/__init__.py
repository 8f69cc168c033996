"""Model optimizations applied after a model loads: weight quantization as module swaps (`quant`, with
joulepath's own int8/int4 kernels for AVX512-VNNI and AVX2 CPUs in `vnni`)."""

from joulepath.optimize.quant import (
    ALL_MODES,
    MODES,
    VNNI_MODES,
    Int4VnniLinear,
    Int4WeightOnlyLinear,
    Int8DynamicLinear,
    Int8VnniLinear,
    Int8WeightOnlyLinear,
    QuantizedLinear,
    QuantMode,
    QuantSummary,
    available_modes,
    quantize_model,
)

__all__ = [
    "ALL_MODES",
    "MODES",
    "VNNI_MODES",
    "Int4VnniLinear",
    "Int4WeightOnlyLinear",
    "Int8DynamicLinear",
    "Int8VnniLinear",
    "Int8WeightOnlyLinear",
    "QuantMode",
    "QuantSummary",
    "QuantizedLinear",
    "available_modes",
    "quantize_model",
]
