"""Run telemetry as Parquet (per-request records, facility series, hot-path classes), queryable with
DuckDB: `joulepath query RUN "SELECT ..."` sees each file as a table of the same name."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from joulepath.run import RunResult

TABLES = ("requests", "facility", "profile")


def _write(table: dict[str, list[Any]], path: Path) -> None:
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(pa.table(table), tmp)
    tmp.replace(path)


def request_rows(result: RunResult) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {k: [] for k in (
        "config", "request_id", "arrival_s", "skill", "level", "correct", "prompt_tokens", "output_tokens",
        "ttft_s", "tpot_s", "e2e_s", "energy_j", "energy_provenance", "finish_reason",
    )}  # fmt: skip
    local = result.local
    for run in (local.baseline, local.optimized) if local else ():
        for r in run.requests:
            rec = r.record
            values = (run.name, rec.request_id, r.arrival_s, r.skill, r.level, r.correct, rec.prompt_tokens,
                      rec.output_tokens, rec.ttft_s, rec.tpot_s, rec.e2e_s, rec.energy_j, rec.energy_provenance,
                      rec.finish_reason)  # fmt: skip
            for key, value in zip(cols, values, strict=True):
                cols[key].append(value)
    return cols


def facility_rows(result: RunResult) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {"config": [], "t_s": []}
    outcomes = [("optimized", result.facility)] + ([("baseline", result.baseline.facility)] if result.baseline else [])
    names = sorted(result.facility.series)
    for name in names:
        cols[name] = []
    for config, twin in outcomes:
        n = twin.clock.n_steps
        cols["config"] += [config] * n
        cols["t_s"] += [i * twin.clock.dt_s for i in range(n)]
        for name in names:
            cols[name] += twin.series[name].tolist()
    return cols


def profile_rows(result: RunResult) -> dict[str, list[Any]]:
    keys = ("name", "time_s", "share", "energy_j", "flops", "bytes", "bound", "roofline_efficiency")
    cols: dict[str, list[Any]] = {k: [] for k in keys}
    prof = result.local.profile if result.local else None
    for c in prof.classes if prof else ():
        for k in keys:
            cols[k].append(getattr(c, k))
    return cols


def write_telemetry(result: RunResult, run_dir: Path) -> Path:
    folder = run_dir / "telemetry"
    folder.mkdir(parents=True, exist_ok=True)
    _write(request_rows(result), folder / "requests.parquet")
    _write(facility_rows(result), folder / "facility.parquet")
    _write(profile_rows(result), folder / "profile.parquet")
    return folder


def query(run_dir: Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run SQL over a run's telemetry; each Parquet file is a view of the same name."""
    import duckdb

    folder = run_dir / "telemetry"
    if not folder.is_dir():
        raise FileNotFoundError(f"{run_dir}: no telemetry/ folder; give a folder written by `joulepath run`")
    con = duckdb.connect()
    for name in TABLES:
        path = folder / f"{name}.parquet"
        if path.is_file():
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{path.as_posix()}')")
    try:
        cur = con.execute(sql)
    except duckdb.Error as exc:
        raise ValueError(f"query failed: {exc}; tables: {', '.join(TABLES)}") from None
    columns = [d[0] for d in cur.description or []]
    return columns, cur.fetchall()
