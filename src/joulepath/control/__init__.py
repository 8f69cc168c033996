"""Adaptive infrastructure: controllers and forecasters for the facility twin's feedback loop.

No torch here (tested). Imports `facility` and `hw`; neither imports this package. Data flow:
load and weather history -> forecasts -> controller -> setpoints per interval -> `facility.feedback`
-> the twin's usual result. `control.shift`: batch work moved in time with a battery against carbon and
price (scipy's HiGHS), and `control.shift_year.shift_facility_year`, its entry for the main job;
`control.power`: power caps and oversubscription over `hw.fleet`; `control.supply`: a supply controller
(battery and admission of deferrable work by grid carbon) for the feedback loop. `control.forecast` (LightGBM via
mlforecast) is an optional extra.
"""

from joulepath.control.cooling import CoolingMpc, DiurnalPersistence, FixedSetpoint, MpcConfig, TrimAndRespond
from joulepath.control.power import CapPoint, Oversubscription, cap_curve, choose_cap, load_table, oversubscribe
from joulepath.control.shift import (
    ShiftConfig,
    ShiftOutcome,
    oracle,
    receding_horizon,
    run_now,
    savings,
    shift_problem,
)
from joulepath.control.shift_year import FacilityShift, shift_facility_year
from joulepath.control.supply import CarbonAwareSupply
from joulepath.control.twin import CONTROLLERS, ControlConfig, make_controller, run_controlled_twin

__all__ = [
    "CONTROLLERS",
    "CapPoint",
    "CarbonAwareSupply",
    "ControlConfig",
    "CoolingMpc",
    "DiurnalPersistence",
    "FacilityShift",
    "FixedSetpoint",
    "MpcConfig",
    "Oversubscription",
    "ShiftConfig",
    "ShiftOutcome",
    "TrimAndRespond",
    "cap_curve",
    "choose_cap",
    "load_table",
    "make_controller",
    "oracle",
    "oversubscribe",
    "receding_horizon",
    "run_controlled_twin",
    "run_now",
    "savings",
    "shift_facility_year",
    "shift_problem",
]
