"""The facility twin: weather, grid, power chain, cooling, on-site supply and storage, metrics.

No torch here (tested). Data flow: IT board power -> power chain -> heat -> cooling -> facility power ->
supply dispatch -> grid import, carbon, cost.
"""

from joulepath.facility.cooling import CoolingConfig
from joulepath.facility.core import Clock, simulate
from joulepath.facility.presets import PRESETS, get_preset
from joulepath.facility.twin import FacilityConfig, TwinMetrics, TwinResult, run_twin

__all__ = [
    "PRESETS",
    "Clock",
    "CoolingConfig",
    "FacilityConfig",
    "TwinMetrics",
    "TwinResult",
    "get_preset",
    "run_twin",
    "simulate",
]
