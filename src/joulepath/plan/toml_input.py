"""`PlanInputs` from a TOML file's `[plan]` table (every key optional but the demand's size); unknown
keys are errors that name the known ones.

```toml
[plan]
model = "llama-3.1-70b"        # hw/data/models.toml preset
objective = "cost"             # cost | energy | carbon
[plan.demand]                  # either tokens_per_s = [...] (a day in equal bins) or:
mean_tokens_per_s = 200000     # output tokens/s, daily mean
peak_to_mean = 1.5             # diurnal sine, peak at 14:00
prompt_tokens = 1000
output_tokens = 250
[plan.slo]
ttft_p99_s = 2.0
tpot_p99_s = 0.1
[plan.site]
feed_mw = 50
cooling_presets = ["modern-air", "hyperscale-liquid"]
[plan.prices]
carbon_usd_per_t = 50
[plan.search]
accelerators = ["h100-sxm", "b200", "gb200"]
```
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from joulepath.facility.grid import Tariff
from joulepath.hw.perf import get_model_preset
from joulepath.plan.inputs import Demand, PlanInputs, SearchSpace, Site, Slo, default_prices

DEMAND_KEYS = {
    "tokens_per_s",
    "mean_tokens_per_s",
    "peak_to_mean",
    "prompt_tokens",
    "output_tokens",
    "prompt_tokens_p99",
}
TOP_KEYS = {"model", "objective", "demand", "slo", "site", "prices", "search", "facility_step_s", "facility_days"}


def _check(raw: dict[str, Any], known: set[str], where: str) -> None:
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"[{where}] has unknown keys {sorted(unknown)}; known: {sorted(known)}")


def _build(cls: type, raw: dict[str, Any], where: str) -> Any:
    _check(raw, {f.name for f in dataclasses.fields(cls)}, where)
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def diurnal_curve(mean_tokens_per_s: float, peak_to_mean: float, bins: int = 24) -> tuple[float, ...]:
    """A sine over the day with its peak at 14:00 (assumed shape) and the given mean and peak/mean.

    >>> c = diurnal_curve(100.0, 1.5)
    >>> round(sum(c) / len(c), 6), round(max(c))  # bins centred on the half hour: the peak is ~149.6
    (100.0, 150)
    """
    if not 1.0 <= peak_to_mean <= 2.0:
        raise ValueError("peak_to_mean must be in [1, 2] (a sine cannot go below zero beyond 2)")
    hour = (np.arange(bins) + 0.5) * 24.0 / bins
    return tuple(float(v) for v in mean_tokens_per_s * (1 + (peak_to_mean - 1) * np.cos(2 * np.pi * (hour - 14) / 24)))


def demand_from(raw: dict[str, Any]) -> Demand:
    _check(raw, DEMAND_KEYS, "plan.demand")
    prompt, output = float(raw.get("prompt_tokens", 1000)), float(raw.get("output_tokens", 250))
    if "tokens_per_s" in raw:
        curve = tuple(float(v) for v in raw["tokens_per_s"])
        source = f"scenario: {len(curve)}-bin daily curve"
    else:
        mean, ratio = float(raw["mean_tokens_per_s"]), float(raw.get("peak_to_mean", 1.5))
        curve, source = (
            diurnal_curve(mean, ratio),
            f"scenario: diurnal sine, mean {mean:g} tokens/s, peak/mean {ratio:g}",
        )
    p99 = float(raw.get("prompt_tokens_p99", 3 * prompt))
    return Demand(curve, prompt, output, p99, source)


def prices_from(raw: dict[str, Any]) -> Any:
    _check(raw, {"carbon_usd_per_t", "tariff"}, "plan.prices")
    tariff = _build(Tariff, raw["tariff"], "plan.prices.tariff") if "tariff" in raw else Tariff()
    return dataclasses.replace(default_prices(), tariff=tariff, carbon_usd_per_t=float(raw.get("carbon_usd_per_t", 0)))


def inputs_from(raw: dict[str, Any], demand: Demand | None = None) -> PlanInputs:
    """`PlanInputs` from a parsed `[plan]` table; `demand` (e.g. from a trace) replaces `[plan.demand]`."""
    _check(raw, TOP_KEYS, "plan")
    if demand is None:
        if "demand" not in raw:
            raise ValueError("[plan.demand] is required (tokens_per_s or mean_tokens_per_s) unless a trace is given")
        demand = demand_from(raw["demand"])
    return PlanInputs(
        model=get_model_preset(raw.get("model", "llama-3.1-70b")),
        demand=demand,
        slo=_build(Slo, raw.get("slo", {}), "plan.slo"),
        site=_build(Site, raw.get("site", {}), "plan.site"),
        prices=prices_from(raw.get("prices", {})),
        space=_build(SearchSpace, raw.get("search", {}), "plan.search"),
        objective=raw.get("objective", "cost"),
        facility_step_s=float(raw.get("facility_step_s", 3600.0)),
        facility_days=float(raw.get("facility_days", 365.0)),
    )


def read_plan(path: Path, demand: Demand | None = None) -> PlanInputs:
    """`PlanInputs` from the `[plan]` table of a TOML file (a scenario file may carry it)."""
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    if "plan" not in doc:
        raise ValueError(f"{path}: no [plan] table")
    return inputs_from(doc["plan"], demand)
