"""Adaptive infrastructure: controllers and forecasters for the facility twin's feedback loop.

No torch here (tested). Imports `facility` and `hw`; neither imports this package. Data flow:
load and weather history -> forecasts -> controller -> setpoints per interval -> `facility.feedback`
-> the twin's usual result. `control.forecast` (LightGBM via mlforecast) is an optional extra.
"""

from joulepath.control.cooling import CoolingMpc, DiurnalPersistence, FixedSetpoint, MpcConfig, TrimAndRespond
from joulepath.control.twin import CONTROLLERS, ControlConfig, make_controller, run_controlled_twin

__all__ = [
    "CONTROLLERS",
    "ControlConfig",
    "CoolingMpc",
    "DiurnalPersistence",
    "FixedSetpoint",
    "MpcConfig",
    "TrimAndRespond",
    "make_controller",
    "run_controlled_twin",
]
