"""The facility twin: weather, grid, power chain, cooling, on-site supply and storage, metrics.

No torch here (tested). Data flow: IT board power -> power chain -> heat -> cooling -> facility power ->
supply dispatch -> grid import, carbon, cost. `run_controlled` (feedback.py) puts a controller in the loop:
cooling setpoints every control interval.
"""

from joulepath.facility.cooling import CoolingConfig, Setpoints
from joulepath.facility.core import Clock, simulate
from joulepath.facility.feedback import ControlledRun, Controller, run_controlled
from joulepath.facility.presets import PRESETS, get_preset
from joulepath.facility.twin import LOAD_SHAPES, FacilityConfig, TwinMetrics, TwinResult, load_on_clock, run_twin

__all__ = [
    "LOAD_SHAPES",
    "PRESETS",
    "Clock",
    "ControlledRun",
    "Controller",
    "CoolingConfig",
    "FacilityConfig",
    "Setpoints",
    "TwinMetrics",
    "TwinResult",
    "get_preset",
    "load_on_clock",
    "run_controlled",
    "run_twin",
    "simulate",
]
