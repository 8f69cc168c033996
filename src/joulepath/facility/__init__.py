"""The facility twin: weather, grid, power chain, cooling, on-site supply and storage, metrics.

No torch here (tested). Data flow: IT board power -> power chain -> heat -> cooling -> facility power ->
supply dispatch -> grid import, carbon, cost.
"""

from joulepath.facility.cooling import CoolingConfig
from joulepath.facility.core import Clock, simulate
from joulepath.facility.presets import PRESETS, get_preset
from joulepath.facility.twin import LOAD_SHAPES, FacilityConfig, TwinMetrics, TwinResult, load_on_clock, run_twin

__all__ = [
    "LOAD_SHAPES",
    "PRESETS",
    "Clock",
    "CoolingConfig",
    "FacilityConfig",
    "TwinMetrics",
    "TwinResult",
    "get_preset",
    "load_on_clock",
    "run_twin",
    "simulate",
]
