"""Hardware catalog and hardware models (roofline time, power, data-movement energy).

Never imports torch or any higher joulepath layer: the twin and planner stay light.
"""

from joulepath.hw.catalog import (
    Accelerator,
    Interconnect,
    MemoryTier,
    UnknownHardwareError,
    accelerators,
    get_accelerator,
    get_interconnect,
    get_memory,
    interconnects,
    local_cpu,
    memories,
)
from joulepath.hw.perf import (
    Deployment,
    Efficiency,
    StepCost,
    TransformerSpec,
    decode_step,
    get_model_preset,
    model_presets,
    prefill_step,
)
from joulepath.hw.work import WorkProfile

__all__ = [
    "Accelerator",
    "Deployment",
    "Efficiency",
    "Interconnect",
    "MemoryTier",
    "StepCost",
    "TransformerSpec",
    "UnknownHardwareError",
    "WorkProfile",
    "accelerators",
    "decode_step",
    "get_accelerator",
    "get_interconnect",
    "get_memory",
    "get_model_preset",
    "interconnects",
    "local_cpu",
    "memories",
    "model_presets",
    "prefill_step",
]
