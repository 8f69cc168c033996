"""Model optimizations applied after a model loads: weight quantization as module swaps (`quant`)."""

from joulepath.optimize.quant import (
    MODES,
    Int4WeightOnlyLinear,
    Int8DynamicLinear,
    Int8WeightOnlyLinear,
    QuantizedLinear,
    QuantMode,
    QuantSummary,
    available_modes,
    quantize_model,
)

__all__ = [
    "MODES",
    "Int4WeightOnlyLinear",
    "Int8DynamicLinear",
    "Int8WeightOnlyLinear",
    "QuantMode",
    "QuantSummary",
    "QuantizedLinear",
    "available_modes",
    "quantize_model",
]
