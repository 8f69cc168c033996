"""`result.json`: a versioned, self-describing serialisation of a `RunResult`.

Written atomically (temporary file, then rename) so an interrupted run never leaves half a file.
Every energy figure sits next to its provenance.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from joulepath.facility import TwinResult
    from joulepath.run import RunResult


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def result_to_dict(result: RunResult) -> dict[str, Any]:
    """The JSON document for a run (schema version in `schema_version`)."""
    from joulepath.run import SCHEMA_VERSION

    proj = result.projection
    return {
        "schema_version": SCHEMA_VERSION,
        "scenario": result.scenario.model_dump(mode="json"),
        "summary": _plain(result.summary),
        "trace": {"source": result.trace_source, **_plain(result.trace)},
        "waterfall": [_plain(s) for s in result.waterfall.stages],
        "data_movement_per_token": _plain(result.data_movement),
        "facility": facility_to_dict(result.facility),
        "fleet": {
            "n_units": proj.n_units,
            "devices_per_unit": proj.devices_per_unit,
            "max_batch_per_unit": proj.max_batch_per_unit,
            "idle_power_w": proj.idle_power_w,
            "efficiency_source": result.efficiency_source,
            "provenance": proj.provenance,
        },
        "series": {
            "bin_s": proj.bin_s,
            "t_s": _plain(proj.t_s),
            "demand_tokens": _plain(proj.demand_tokens),
            "served_tokens": _plain(proj.served_tokens),
            "backlog_tokens": _plain(proj.backlog_tokens),
            "batch_per_unit": _plain(proj.batch_per_unit),
            "itl_s": _plain(proj.itl_s),
            "device_power_w": _plain(proj.device_power_w),
        },
        "meter": {"notes": result.meter_notes, "analysis": _plain(result.analysis_energy)},
        "baseline": _fleet_outcome(result.baseline) if result.baseline else None,
        "local": local_to_dict(result.local) if result.local else None,
    }


def _fleet_outcome(outcome: Any) -> dict[str, Any]:
    return {
        "max_batch": outcome.max_batch,
        "summary": _plain(outcome.summary),
        "waterfall": [_plain(s) for s in outcome.waterfall.stages],
        "facility_metrics": _plain(outcome.facility.metrics),
    }


def local_run_to_dict(run: Any) -> dict[str, Any]:
    """Headline numbers of one configuration served on this machine (measured; energy as metered)."""
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
        "guard_blocked": list(run.blocked),
        "guard_redacted_outputs": sum(r.output_guard == "redact" for r in run.requests),
        "guard_s": run.guard_s,
        "ttft_p50_s": run.percentile("ttft_s", 50),
        "ttft_p99_s": run.percentile("ttft_s", 99),
        "tpot_p50_s": run.percentile("tpot_s", 50),
        "tpot_p99_s": run.percentile("tpot_s", 99),
    }


def local_to_dict(local: Any) -> dict[str, Any]:
    prof = local.profile
    return {
        "model": local.model,
        "device": local.device,
        "baseline": local_run_to_dict(local.baseline),
        "optimized": local_run_to_dict(local.optimized),
        "profile": None
        if prof is None
        else {
            "attributed_fraction": prof.attributed_fraction,
            "overhead_fraction": prof.overhead_fraction,
            "wall_s": prof.wall_s,
            "energy_j": prof.energy_j,
            "energy_provenance": f"{prof.energy_provenance}; split by time (estimated)",
            "limits": _plain(prof.limits),
            "classes": [_plain(c) for c in prof.classes],
            "advice": [{**_plain(a), "line": a.line()} for a in prof.advice],
            "operators": prof.operators,
        },
    }


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
            name: _plain(twin.series[name][: n_days * steps_per_day].reshape(n_days, steps_per_day).mean(axis=1))
            for name in FACILITY_SERIES
        }
        if n_days
        else {}
    )
    return {
        "design": twin.config.name,
        "cooling": _plain(twin.config.cooling),
        "topology": twin.config.topology,
        "weather_source": twin.weather_source,
        "grid_source": twin.grid_source,
        "horizon_s": twin.clock.horizon_s,
        "step_s": twin.clock.dt_s,
        "metrics": _plain(twin.metrics),
        "warnings": twin.warnings,
        "daily_means": daily,
    }


def write_json_atomic(path: Path, data: Any) -> Path:
    """JSON written to a temporary file, then renamed: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_plain_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _plain_default(value: Any) -> Any:
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def write_result(result: RunResult, run_dir: Path) -> Path:
    """Write `run_dir/result.json` atomically and return its path."""
    return write_json_atomic(run_dir / "result.json", result_to_dict(result))
