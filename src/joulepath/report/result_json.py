"""`result.json`: a versioned, self-describing serialisation of a `RunResult`.

Written atomically (temporary file, then rename) so an interrupted run never leaves half a file.
Every energy figure sits next to its provenance, and every series has one (`series.provenance`,
`facility.daily_means.provenance`: series name -> label).

Strict JSON: no NaN or Infinity anywhere (written with `allow_nan=False`). A number that is not defined
(a percentile of no requests, a ratio with a zero side) or not finite is written as null; `null_means`
in the document says so.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from joulepath.hw.work import WorkProfile
from joulepath.meter import TIME_PROVENANCE
from joulepath.report.wording import ratio_verdict
from joulepath.results import (
    SCHEMA_VERSION,
    AblationStep,
    ControlOutcome,
    EndpointRun,
    FleetOutcome,
    HotPathProfile,
    KVOffloadUse,
    LocalComparison,
    LocalRun,
    PowerCapChoice,
    RatioSpread,
    RunResult,
    ShiftChoice,
    TierPolicy,
    TierUse,
)

if TYPE_CHECKING:
    from joulepath.facility import TwinResult

NULL_MEANS = (
    "null: the number is not defined here (a percentile of no requests, a ratio with a zero or missing side) "
    "or was not finite; result.json is strict JSON, without NaN or Infinity"
)


def plain(value: Any) -> Any:
    """`value` as JSON-ready Python: dataclasses and dicts to dicts, arrays and tuples to lists, NaN and
    infinities to None (strict JSON has no NaN)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def result_to_dict(result: RunResult) -> dict[str, Any]:
    """The JSON document for a run (schema version in `schema_version`)."""
    proj = result.projection
    doc = {
        "schema_version": SCHEMA_VERSION,
        "null_means": NULL_MEANS,
        "scenario": result.scenario.model_dump(mode="json"),
        "summary": plain(result.summary),
        "trace": {"source": result.trace_source, **plain(result.trace)},
        "waterfall": [plain(s) for s in result.waterfall.stages],
        "data_movement_per_token": plain(result.data_movement),
        "facility": facility_to_dict(result.facility),
        "fleet": {
            "n_units": proj.n_units,
            "devices_per_unit": proj.devices_per_unit,
            "n_devices": proj.n_devices,
            "max_batch_per_unit": proj.max_batch_per_unit,
            "idle_power_w": proj.idle_power_w,
            "efficiency_source": result.efficiency_source,
            "provenance": proj.provenance,
            "small_tier": plain(proj.small_tier) if proj.small_tier else None,
            "work": work_to_dict(result.work),
        },
        "series": {
            "bin_s": proj.bin_s,
            "t_s": plain(proj.t_s),
            "demand_tokens": plain(proj.demand_tokens),
            "served_tokens": plain(proj.served_tokens),
            "backlog_tokens": plain(proj.backlog_tokens),
            "batch_per_unit": plain(proj.batch_per_unit),
            "itl_s": plain(proj.itl_s),
            "device_power_w": plain(proj.device_power_w),
            "provenance": series_provenance(result),
        },
        "meter": {"notes": result.meter_notes, "analysis": plain(result.analysis_energy)},
        "baseline": _fleet_outcome(result.baseline) if result.baseline else None,
        "local": local_to_dict(result.local) if result.local else None,
        "endpoint": endpoint_to_dict(result.endpoint) if result.endpoint else None,
        "control": control_to_dict(result.control) if result.control else None,
        "power_cap": power_cap_to_dict(result.power_cap) if result.power_cap else None,
        "shift": shift_to_dict(result.shift) if result.shift else None,
        "headline": headline_to_dict(result),
        "ablation": [ablation_step_to_dict(s, result.ablation[0]) for s in result.ablation],
    }
    return plain(doc)  # every non-finite float, wherever it sits, becomes null


def series_provenance(result: RunResult) -> dict[str, str]:
    """Series name -> provenance for `series`: the time bins and demand come from the trace, the rest
    from the hardware model's projection."""
    trace = f"{result.trace_source} (binned every {result.projection.bin_s:g} s)"
    fleet = ("served_tokens", "backlog_tokens", "batch_per_unit", "itl_s", "device_power_w")
    return {"t_s": trace, "demand_tokens": trace, **{name: result.projection.provenance for name in fleet}}


def _fleet_outcome(outcome: FleetOutcome) -> dict[str, Any]:
    return {
        "max_batch": outcome.max_batch,
        "summary": plain(outcome.summary),
        "waterfall": [plain(s) for s in outcome.waterfall.stages],
        "facility_metrics": plain(outcome.facility.metrics),
        "work": work_to_dict(outcome.work),
    }


def work_to_dict(work: WorkProfile | None) -> dict[str, Any] | None:
    """The work profile a projection applied, with the prefix-cache hits it subtracted (None: the
    fleet model's defaults, nothing was served here)."""
    if work is None:
        return None
    return {**plain(work), "prefix_hit_tokens": work.prefix_hit_tokens}


def with_joules_per_correct(t: TierUse | TierPolicy) -> dict[str, Any]:
    """A tier's or a routing policy's fields and its joules per correct answer (null with none correct)."""
    return plain(t) | {"joules_per_correct": t.joules_per_correct if t.correct else None}


def local_run_to_dict(run: LocalRun) -> dict[str, Any]:
    """Headline numbers of one configuration served on this machine: time and accuracy measured, energy
    as the meter labelled it (`provenance` says which is which)."""
    return {
        "name": run.name,
        "max_batch": run.max_batch,
        "requests": len(run.requests),
        "accuracy": run.accuracy,
        "output_tokens": run.output_tokens,
        "wall_s": run.wall_s,
        "tokens_per_s": run.tokens_per_s,
        "energy_j": run.energy_j,
        "j_per_token": run.j_per_token,
        "energy_provenance": run.energy_provenance,
        "provenance": {"time": TIME_PROVENANCE, "accuracy": run.accuracy_provenance, "energy": run.energy_provenance},
        "guard_blocked": list(run.blocked),
        "guard_redacted_outputs": sum(r.output_guard == "redact" for r in run.requests),
        "guard_s": run.guard_s,
        "ttft_p50_s": run.percentile("ttft_s", 50),
        "ttft_p99_s": run.percentile("ttft_s", 99),
        "tpot_p50_s": run.percentile("tpot_s", 50),
        "tpot_p99_s": run.percentile("tpot_s", 99),
        "kv_offload": kv_offload_to_dict(run.kv),
        "lever": run.lever,
        "torch_threads": run.torch_threads,
        "bytes_per_weight": run.bytes_per_weight,
        "tiers": [with_joules_per_correct(t) for t in run.tier_mix()],
    }


def control_to_dict(c: ControlOutcome) -> dict[str, Any]:
    """The cooling controller against fixed setpoints on the optimized load (daily series left out)."""
    keys = ("controller", "cooling_j_fixed", "cooling_j_controlled", "facility_j_fixed", "facility_j_controlled",
            "inlet_violation_steps", "provenance")  # fmt: skip
    return {k: getattr(c, k) for k in keys} | {
        "cooling_saving_frac": c.cooling_saving_frac, "facility_saving_frac": c.facility_saving_frac,
    }  # fmt: skip


def shift_to_dict(c: ShiftChoice) -> dict[str, Any]:
    """Shifting and battery dispatch: run-now, the online policy and the oracle (daily series left out)."""
    names = ("run_now", "policy", "oracle")
    return {
        "deferrable_share": c.deferrable_share,
        "deadline_h": c.deadline_h,
        "battery_hours": c.battery_hours,
        "co2_kg": dict(zip(names, c.co2_kg, strict=True)),
        "cost_usd": dict(zip(names, c.cost_usd, strict=True)),
        "grid_energy_j": dict(zip(names[:2], c.grid_energy_j, strict=True)),
        "co2_cut_frac": c.co2_cut_frac,
        "cost_cut_frac": c.cost_cut_frac,
        "oracle_fraction": c.oracle_fraction,
        "missed_deadlines": c.missed_deadlines,
        "provenance": c.provenance,
    }


def power_cap_to_dict(c: PowerCapChoice) -> dict[str, Any]:
    """The optimized fleet's power limit and the curve it was chosen from (estimated)."""
    keys = ("tdp_w", "cap_w", "j_saving_pct", "p99_slowdown_pct", "latency_bound_pct", "static_power_scales")
    curve = [{"cap_w": w, "j_saving_pct": j, "p99_slowdown_pct": s, "counted": ok} for w, j, s, ok in c.curve]
    return {k: getattr(c, k) for k in keys} | {"capped": c.cap_w < c.tdp_w, "curve": curve, "provenance": c.provenance}


def endpoint_to_dict(ep: EndpointRun) -> dict[str, Any]:
    """An endpoint measured by `joulepath bench serve`: what was sent, what failed, and what it served."""
    return {
        "url": ep.url,
        "model": ep.model,
        "sent": ep.sent,
        "errors": len(ep.errors),
        "error_rate": ep.error_rate,
        "error_examples": list(ep.errors[:20]),
        "connections": ep.connections,
        "time_scale": ep.time_scale,
        "energy_source": ep.energy_source,
        "served": local_run_to_dict(ep.run) | {"provenance": {"time": "measured at the client", "tokens": "the "
                                               "endpoint's usage", "energy": ep.run.energy_provenance}},
    }  # fmt: skip


def kv_offload_to_dict(kv: KVOffloadUse | None) -> dict[str, Any] | None:
    """The pool and tiers (measured) and, for a modelled tier, what it would have changed (estimated)."""
    if kv is None:
        return None
    out = plain(kv) | {"provenance": "measured: counts and copy times on this machine"}
    if kv.modelled is not None:
        m = kv.modelled
        out["modelled"]["provenance"] = {
            "hit_blocks": m.count_provenance,
            "copy_s": m.estimate_provenance,
            "copy_j": m.estimate_provenance,
            "recompute_s": m.recompute_provenance,
        }
    return out


def repetition_to_dict(run: LocalRun) -> dict[str, Any]:
    """One repetition's totals (the median repetition's full record is the configuration's entry)."""
    keys = ("wall_s", "output_tokens", "energy_j", "j_per_token", "tokens_per_s", "accuracy", "energy_provenance")
    return {k: getattr(run, k) for k in keys} | {
        "requests": len(run.requests),
        "ttft_p99_s": run.percentile("ttft_s", 99),
    }


def ratio_to_dict(
    spread: RatioSpread, definition: str = "optimized / baseline, paired by repetition (served interleaved)"
) -> dict[str, Any]:
    """One local ratio over the repetitions, with its verdict in words."""
    return {
        "definition": definition,
        "median": spread.median,
        "min": spread.low,
        "max": spread.high,
        "values": list(spread.values),
        "no_significant_difference": spread.spread_known and spread.includes_one,
        "verdict": ratio_verdict(spread),
        "provenance": spread.provenance,
    }


def headline_to_dict(result: RunResult) -> dict[str, Any] | None:
    """Brute force vs optimized: tokens per joule here and at the wall, and accuracy (None: no ablation)."""
    h = result.headline()
    if h is None:
        return None
    local = h.local_tokens_per_joule
    return {
        "local_tokens_per_joule_ratio": local.median if local else None,
        "local_tokens_per_joule_ratio_min": local.low if local else None,
        "local_tokens_per_joule_ratio_max": local.high if local else None,
        "local_provenance": local.provenance if local else None,
        "wall_tokens_per_joule_ratio": h.wall_tokens_per_joule_ratio,
        "wall_provenance": "estimated: hardware model + facility twin + ledger, brute force vs optimized",
        "accuracy_brute": h.accuracy_brute,
        "accuracy_optimized": h.accuracy_optimized,
        "accuracy_delta_pts": h.accuracy_delta_pts,
        "accuracy_delta_ci95_pts": list(h.accuracy_delta_ci95_pts) if h.accuracy_delta_ci95_pts else None,
        "accuracy_provenance": LocalRun.accuracy_provenance,
        "provenance": {
            "accuracy_delta_ci95_pts": "measured: paired 95 % interval (Newcombe's hybrid score, method 10) over "
            "every request both configurations answered"
        },
    }


def ablation_step_to_dict(step: AblationStep, first: AblationStep) -> dict[str, Any]:
    """One waterfall step: projected figures always, the served rung's measured ones where it has one."""
    out: dict[str, Any] = {
        "lever": step.lever,
        "description": step.description,
        "acts_on": step.acts_on,
        "wall_j_per_token": step.wall_j_per_token,
        "wall_tokens_per_joule": 1 / step.wall_j_per_token if step.wall_j_per_token else None,
        "wall_tokens_per_joule_vs_brute": first.wall_j_per_token / step.wall_j_per_token
        if step.wall_j_per_token
        else None,
        "carbon_g_per_token": step.carbon_g_per_token,
        "provenance": step.provenance,
        "local": None,
    }
    if step.local is not None:
        run = step.local.median
        out["local"] = {
            "tokens_per_joule": 1 / run.j_per_token if run.j_per_token else None,
            "j_per_token": run.j_per_token,
            "tokens_per_s": run.tokens_per_s,
            "accuracy": step.accuracy,
            "accuracy_ci95": step.accuracy_interval,
            "energy_provenance": run.energy_provenance,
            "repetitions": [repetition_to_dict(r) for r in step.local.runs],
            "j_per_token_vs_previous": ratio_to_dict(
                step.local_ratio, "this step / the previous served step, paired by repetition (served interleaved)"
            )
            if step.local_ratio
            else None,
        }
    return out


def local_to_dict(local: LocalComparison) -> dict[str, Any]:
    return {
        "model": local.model,
        "device": local.device,
        "repeats": local.repeats,
        # every distinct request served (all repetitions' slices): the headline's accuracies are over these
        "served_requests": len(local.optimized_answers),
        "accuracy_baseline": local.accuracy_baseline,
        "accuracy_optimized": local.accuracy_optimized,
        "baseline": local_run_to_dict(local.baseline)
        | {"repetitions": [repetition_to_dict(r) for r in local.baseline_runs]},
        "optimized": local_run_to_dict(local.optimized)
        | {"repetitions": [repetition_to_dict(r) for r in local.optimized_runs]},
        "ratios": {spread.metric: ratio_to_dict(spread) for spread in local.ratios()},
        "gates": [plain(g) | {"drop_points": g.drop_points, "accuracy_provenance": g.provenance} for g in local.gates],
        "profile": profile_to_dict(local.profile),
        "profile_brute_force": profile_to_dict(local.profile_brute),
        "tier_policies": [with_joules_per_correct(t) for t in local.tier_policies],
    }


def profile_to_dict(prof: HotPathProfile | None) -> dict[str, Any] | None:
    """One configuration's hot paths: classes hottest first, advice, operators (None: not profiled)."""
    return (
        None
        if prof is None
        else {
            "attributed_fraction": prof.attributed_fraction,
            "overhead_fraction": prof.overhead_fraction,
            "wall_s": prof.wall_s,
            "energy_j": prof.energy_j,
            "energy_provenance": f"{prof.energy_provenance}; {prof.energy_split_provenance}",
            "time_provenance": prof.time_provenance,
            "roofline_provenance": prof.roofline_provenance,
            "limits": plain(prof.limits),
            "classes": [plain(c) for c in prof.classes],
            "advice": [{**plain(a), "line": a.line()} for a in prof.advice],
            "operators": prof.operators,
        }
    )


FACILITY_SERIES = (
    "t_outdoor_c",
    "it_power_w",
    "cooling_power_w",
    "facility_power_w",
    "grid_import_w",
    "carbon_intensity_g_per_kwh",
    "inlet_c",
)


def facility_to_dict(twin: TwinResult) -> dict[str, Any]:
    """Twin metrics, sources, warnings, and daily means of the main series (the full-resolution
    telemetry goes to Parquet in a later step)."""
    steps_per_day = max(1, round(86400 / twin.clock.dt_s))
    n_days = twin.clock.n_steps // steps_per_day
    daily = (
        {
            name: plain(twin.series[name][: n_days * steps_per_day].reshape(n_days, steps_per_day).mean(axis=1))
            for name in FACILITY_SERIES
        }
        if n_days
        else {}
    )
    if daily:
        daily["provenance"] = {name: facility_series_provenance(twin, name) for name in FACILITY_SERIES}
    return {
        "design": twin.config.name,
        "cooling": plain(twin.config.cooling),
        "topology": twin.config.topology,
        "weather_source": twin.weather_source,
        "grid_source": twin.grid_source,
        "horizon_s": twin.clock.horizon_s,
        "step_s": twin.clock.dt_s,
        "metrics": plain(twin.metrics),
        "warnings": twin.warnings,
        "daily_means": daily,
    }


def facility_series_provenance(twin: TwinResult, name: str) -> str:
    """Where a facility series comes from: weather and grid inputs name their source, the rest is the twin."""
    if name == "t_outdoor_c":
        return twin.weather_source
    if name.startswith("carbon_intensity"):
        return twin.grid_source
    return twin.metrics.provenance


def write_json_atomic(path: Path, data: Any) -> Path:
    """Strict JSON (non-finite numbers become null; anything else non-finite is an error, never `NaN`)
    written to a temporary file, then renamed: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    text = json.dumps(plain(data), indent=2, default=_plain_default, allow_nan=False)
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _plain_default(value: Any) -> Any:
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def write_result(result: RunResult, run_dir: Path) -> Path:
    """Write `run_dir/result.json` atomically and return its path."""
    return write_json_atomic(run_dir / "result.json", result_to_dict(result))
