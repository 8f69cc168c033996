"""The main job's entry to `control.shift`: a facility's year of wall power and its grid signals in; the
shifted load, the battery's state of charge, and CO2 and cost under run-now (baseline), the fast online
policy and the perfect-foresight oracle out, each with its provenance.

Data flow: twin series (any step that divides or is a multiple of an hour) -> hourly means ->
`shift_problem` (each hour's deferrable share is one batch job due `deadline_h` later) -> `run_now`,
`receding_horizon` (re-planned every `replan_h` hours, 24 by default: a year in ~2-3 s on a 2-core VM),
`oracle` -> `FacilityShift`.

    >>> import numpy as np
    >>> hours = np.arange(24 * 7)
    >>> wall_w = 1e6 + 2e5 * np.cos(2 * np.pi * (hours % 24 - 15) / 24)
    >>> carbon = 400.0 + 100.0 * np.cos(2 * np.pi * (hours % 24 - 18) / 24)
    >>> r = shift_facility_year(wall_w, carbon, np.full(len(hours), 0.1), deferrable_share=0.25)
    >>> bool(r.policy.co2_kg < r.baseline.co2_kg), r.missed_deadlines
    (True, 0)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from joulepath.control.shift import (
    Battery,
    Savings,
    ShiftConfig,
    ShiftOutcome,
    oracle,
    receding_horizon,
    run_now,
    savings,
    shift_problem,
)
from joulepath.facility.supply import StorageConfig

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class FacilityShift:
    """One facility year shifted. Series are hourly (index h = hour h of the inputs); power in W (= Wh
    per hour), energy in Wh, CO2 in kg, cost in USD. Every figure is estimated from the inputs' series."""

    load_w: np.ndarray  # the policy's facility load: interactive + batch as shifted (before the battery)
    soc_wh: np.ndarray  # the policy's battery state of charge at the end of each hour
    grid_w: np.ndarray  # the policy's grid import: load + charge - discharge
    baseline: ShiftOutcome  # run-now, battery idle: its grid_w is the input wall power
    policy: ShiftOutcome  # the online policy (forecasts only)
    oracle: ShiftOutcome | None  # perfect foresight, the bound on any policy (None: not computed)
    saving: Savings  # policy vs baseline (oracle_fraction NaN without the oracle)
    oracle_saving: Savings | None  # oracle vs baseline
    battery: Battery
    config: ShiftConfig
    provenance: dict[str, str]  # "baseline", "policy", "oracle": how each figure was obtained

    @property
    def missed_deadlines(self) -> int:
        """Batch jobs the policy finished after their deadline (0 by design; reported, never assumed)."""
        return self.policy.missed_jobs


def hourly_compatible(step_s: float) -> bool:
    """Whether a clock of `step_s` seconds divides an hour or is a whole number of hours (`to_hourly`)."""
    per_hour = SECONDS_PER_HOUR / step_s
    return per_hour.is_integer() or (1 / per_hour).is_integer()


def to_hourly(series: np.ndarray, step_s: float) -> np.ndarray:
    """Hourly means of a series on a `step_s` clock (step_s divides an hour), or each step's value
    repeated per hour (step_s a whole number of hours); a final partial hour is averaged as it is."""
    x = np.asarray(series, dtype=float)
    per_hour = SECONDS_PER_HOUR / step_s
    if per_hour >= 1 and per_hour.is_integer():
        edges = np.arange(0, len(x), int(per_hour))
        return np.add.reduceat(x, edges) / np.diff(np.append(edges, len(x)))
    if hourly_compatible(step_s):
        return np.repeat(x, int(1 / per_hour))
    raise ValueError(f"step_s = {step_s:g} s neither divides an hour nor is a whole number of hours")


def shift_facility_year(
    wall_power_w: np.ndarray,
    carbon_g_per_kwh: np.ndarray,
    price_usd_per_kwh: np.ndarray,
    *,
    deferrable_share: float = 0.25,
    deadline_h: int = 24,
    battery_hours: float = 4.0,
    replan_h: int = 24,
    step_s: float = SECONDS_PER_HOUR,
    carbon_weight: float = 0.5,
    battery_power_frac_of_mean: float = 0.25,
    storage: StorageConfig | None = None,
    with_oracle: bool = True,
    capacity_frac_of_peak: float = 1.0,
) -> FacilityShift:
    """Shift `deferrable_share` of each hour's wall power up to `deadline_h` later against carbon and
    price, with a `battery_hours` battery rated at `battery_power_frac_of_mean` x the mean load (its
    efficiencies and state-of-charge bounds from `storage`, default `StorageConfig()`); interactive work
    never moves, load never exceeds the run-now peak, nothing is exported.

    wall_power_w, carbon_g_per_kwh (g/kWh), price_usd_per_kwh (USD/kWh): the same clock of `step_s`
    seconds, e.g. the twin's `series["facility_power_w"]`, `["carbon_intensity_g_per_kwh"]` and
    `["price_usd_per_kwh"]` with `clock.dt_s`. `carbon_weight`: the objective's weight on carbon (the
    rest on cost), each relative to its mean. `replan_h`: hours between the online policy's plans.
    `capacity_frac_of_peak`: the most the facility may draw, as a multiple of the run-now peak (1: no
    hour above today's peak; a fleet with idle accelerators has more room)."""
    load_w, carbon, price = (to_hourly(x, step_s) for x in (wall_power_w, carbon_g_per_kwh, price_usd_per_kwh))
    _check_inputs(load_w, carbon, price)
    cfg = ShiftConfig(
        deferrable_frac=deferrable_share,
        min_slack_h=deadline_h,
        max_slack_h=deadline_h,
        battery_hours=battery_hours,
        battery_power_frac_of_mean=battery_power_frac_of_mean,
        carbon_weight=carbon_weight,
        horizon_h=max(48, deadline_h + replan_h),  # a plan covers every job arriving before the next one
        replan_h=replan_h,
        capacity_frac_of_peak=capacity_frac_of_peak,
    )
    p = shift_problem(load_w, carbon, price, cfg)
    if storage is not None:
        p = replace(p, battery=_battery(p.battery, storage))
    base, policy = run_now(p), receding_horizon(p)
    best = oracle(p) if with_oracle else None
    no_bound = replace(savings(base, policy, policy), oracle_fraction=float("nan"))
    saving = savings(base, policy, best) if best is not None else no_bound
    return FacilityShift(
        p.interactive_w + policy.batch_w,
        policy.soc_wh,
        policy.grid_w,
        base,
        policy,
        best,
        saving,
        savings(base, best, best) if best is not None else None,
        p.battery,
        cfg,
        _provenance(cfg, p.battery, with_oracle),
    )


def _check_inputs(load_w: np.ndarray, carbon: np.ndarray, price: np.ndarray) -> None:
    if not len(load_w):
        raise ValueError("wall_power_w is empty")
    for name, x in (("wall_power_w", load_w), ("carbon_g_per_kwh", carbon), ("price_usd_per_kwh", price)):
        if len(x) < len(load_w):
            raise ValueError(f"{name} has {len(x)} hours, fewer than wall_power_w's {len(load_w)}")
        if not np.all(np.isfinite(x)) or np.any(x < 0):
            raise ValueError(f"{name} must be finite and >= 0")
    if not np.mean(carbon[: len(load_w)]) > 0 or not np.mean(price[: len(load_w)]) > 0:
        raise ValueError("carbon_g_per_kwh and price_usd_per_kwh must not be all zero (the objective divides by means)")


def _battery(b: Battery, s: StorageConfig) -> Battery:
    """The same size with `s`'s efficiencies and state-of-charge bounds."""
    return Battery(
        b.energy_wh,
        b.power_w,
        s.charge_efficiency,
        s.discharge_efficiency,
        s.soc_min_frac * b.energy_wh,
        s.soc_max_frac * b.energy_wh,
    )


def _provenance(cfg: ShiftConfig, b: Battery, with_oracle: bool) -> dict[str, str]:
    battery = (
        f"a {cfg.battery_hours:g} h battery of {b.power_w / 1e3:.0f} kW ({cfg.battery_power_frac_of_mean:.0%} of "
        f"the mean load, {b.charge_eff * b.discharge_eff:.0%} round trip, starting and ending at mid charge)"
        if b.power_w > 0
        else "no battery"
    )
    shared = (
        f"{cfg.deferrable_frac:.0%} of each hour's wall power is batch work due {cfg.max_slack_h} h after it "
        f"arrives (the facility's overheads assumed to move with it), the rest never moves; load <= the run-now "
        f"peak, no export; objective: grid energy x ({cfg.carbon_weight:g} carbon / mean + "
        f"{1 - cfg.carbon_weight:g} price / mean); {battery}"
    )
    out = {
        "baseline": "estimated: run-now, every job in its arrival hour, the battery idle; the input wall power "
        "x the input hourly carbon intensity and price",
        "policy": f"estimated: linear program (HiGHS) over {cfg.horizon_h} h re-planned every {cfg.replan_h} h on "
        "forecasts (carbon: 7-day hourly profile + AR(1) deviation; interactive load and arrivals: the same hour "
        "a week earlier; price: the tariff, known ahead), executed hour by hour with a deadline guard; " + shared,
    }
    if with_oracle:
        out["oracle"] = "estimated: the same linear program over the whole span with perfect foresight (an upper "
        "bound on any policy's saving); " + shared
    return out
