"""The entry point for `joulepath run` / `joulepath twin`: the facility twin with a cooling controller.

>>> import numpy as np
>>> from joulepath.facility import Clock
>>> from joulepath.facility.presets import MODERN_AIR
>>> clock = Clock(3600.0, 24 * 7)
>>> run = run_controlled_twin(MODERN_AIR, np.full(clock.n_steps, 1e6), clock, ControlConfig(interval_s=3600.0))
>>> run.controller, run.twin.metrics.inlet_violation_steps
('mpc', 0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from joulepath.control.cooling import CoolingMpc, DiurnalPersistence, FixedSetpoint, MpcConfig, TrimAndRespond
from joulepath.facility.core import Clock
from joulepath.facility.feedback import ControlledRun, Controller, run_controlled
from joulepath.facility.grid import GridSignal
from joulepath.facility.twin import FacilityConfig
from joulepath.facility.weather import Weather

CONTROLLERS = ("mpc", "g36", "fixed")


@dataclass(frozen=True)
class ControlConfig:
    """The `[control]` section: which controller sets the cooling, how often, how far it looks ahead."""

    controller: str = "mpc"  # mpc | g36 (trim and respond) | fixed (18 C supply air)
    interval_s: float = 900.0  # a decision every 15 minutes
    horizon_intervals: int = 4  # the MPC's look-ahead (1 hour at 15-minute intervals)
    inlet_margin_k: float = 0.3  # the MPC keeps the rack inlet this far below 27 C

    def __post_init__(self) -> None:
        if self.controller not in CONTROLLERS:
            raise ValueError(f"unknown controller {self.controller!r}; known: {', '.join(CONTROLLERS)}")
        if self.interval_s <= 0 or self.horizon_intervals < 1:
            raise ValueError("interval_s must be > 0 and horizon_intervals >= 1")


def make_controller(cfg: FacilityConfig, control: ControlConfig) -> Controller:
    """The controller `control` names, for the facility `cfg`."""
    if control.controller == "mpc":
        return CoolingMpc(cfg, MpcConfig(margin_k=control.inlet_margin_k))
    if control.controller == "g36":
        return TrimAndRespond(cfg.cooling)
    return FixedSetpoint(cfg.cooling)


def run_controlled_twin(
    cfg: FacilityConfig,
    it_board_w: np.ndarray,
    clock: Clock,
    control: ControlConfig | None = None,
    design_board_w: float | None = None,
    weather: Weather | None = None,
    grid: GridSignal | None = None,
) -> ControlledRun:
    """`facility.run_twin` with `control`'s controller in the loop; `.twin` is the usual `TwinResult`
    (its series also hold the setpoints: `sp_supply_air_c`, `sp_chilled_water_c`, ...)."""
    control = control or ControlConfig()
    interval_steps = max(1, round(control.interval_s / clock.dt_s))
    return run_controlled(
        cfg,
        it_board_w,
        clock,
        make_controller(cfg, control),
        DiurnalPersistence(),
        interval_steps=interval_steps,
        horizon_intervals=control.horizon_intervals,
        design_board_w=design_board_w,
        weather=weather,
        grid=grid,
    )
