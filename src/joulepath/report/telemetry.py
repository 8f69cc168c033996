"""Run telemetry as Parquet (per-request records, facility series, hot-path classes), queryable with
DuckDB: `joulepath query RUN "SELECT ..."` sees each file as a table of the same name.

Every table has a `provenance` column: how the row's numbers were obtained, column by column where they
differ (`SELECT DISTINCT provenance FROM facility`); `requests` also keeps `energy_provenance` (the
meter's label for `energy_j`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from joulepath.meter import TIME_PROVENANCE
from joulepath.results import HotPathProfile, LocalRun, RunResult

if TYPE_CHECKING:
    import duckdb

    from joulepath.facility import TwinResult

TABLES = ("requests", "facility", "profile")


def _write(table: dict[str, list[Any]], path: Path) -> None:
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(pa.table(table), tmp)
    tmp.replace(path)


def request_rows(result: RunResult) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {k: [] for k in (
        "config", "request_id", "arrival_s", "skill", "level", "correct", "prompt_tokens", "output_tokens",
        "ttft_s", "tpot_s", "e2e_s", "energy_j", "energy_provenance", "finish_reason", "tier", "route", "provenance",
    )}  # fmt: skip
    local = result.local
    # each configuration's every distinct request (all repetitions' slices; a request served in several: the
    # median repetition's answer)
    configs = (("baseline", local.baseline_answers), ("optimized", local.optimized_answers)) if local else ()
    for name, served in configs:
        for r in served:
            rec = r.record
            provenance = (f"arrival_s, ttft_s, tpot_s, e2e_s: {TIME_PROVENANCE}; "
                          f"correct: {LocalRun.accuracy_provenance}; energy_j: {rec.energy_provenance}")  # fmt: skip
            values = (name, rec.request_id, r.arrival_s, r.skill, r.level, r.correct, rec.prompt_tokens,
                      rec.output_tokens, rec.ttft_s, rec.tpot_s, rec.e2e_s, rec.energy_j, rec.energy_provenance,
                      rec.finish_reason, r.tier, r.route, provenance)  # fmt: skip
            for key, value in zip(cols, values, strict=True):
                cols[key].append(value)
    return cols


def facility_rows(result: RunResult) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {"config": [], "t_s": []}
    outcomes = [("optimized", result.facility)] + ([("baseline", result.baseline.facility)] if result.baseline else [])
    names = sorted({name for _, twin in outcomes for name in twin.series})  # a controlled twin adds setpoints
    for name in names:
        cols[name] = []
    cols["provenance"] = []
    for config, twin in outcomes:
        n = twin.clock.n_steps
        cols["config"] += [config] * n
        cols["t_s"] += [i * twin.clock.dt_s for i in range(n)]
        for name in names:
            cols[name] += twin.series[name].tolist() if name in twin.series else [None] * n
        cols["provenance"] += [facility_provenance(twin)] * n
    return cols


def facility_provenance(twin: TwinResult) -> str:
    """One label for a facility row: the twin for every column, except its weather and grid inputs."""
    return f"{twin.metrics.provenance}; t_outdoor_c: {twin.weather_source}; carbon_intensity: {twin.grid_source}"


def profile_rows(result: RunResult) -> dict[str, list[Any]]:
    keys = ("name", "time_s", "share", "energy_j", "flops", "bytes", "bound", "roofline_efficiency")
    cols: dict[str, list[Any]] = {k: [] for k in (*keys, "provenance")}
    prof = result.local.profile if result.local else None
    if prof is None:
        return cols
    for c in prof.classes:
        for k in keys:
            cols[k].append(getattr(c, k))
        cols["provenance"].append(profile_provenance(prof))
    return cols


def profile_provenance(prof: HotPathProfile) -> str:
    """How a hot-path class's numbers were obtained, column by column."""
    return (
        f"time_s, share: {prof.time_provenance}; energy_j: {prof.energy_provenance}, {prof.energy_split_provenance}; "
        f"flops, bytes, bound, roofline_efficiency: {prof.roofline_provenance}"
    )


def write_telemetry(result: RunResult, run_dir: Path) -> Path:
    folder = run_dir / "telemetry"
    folder.mkdir(parents=True, exist_ok=True)
    _write(request_rows(result), folder / "requests.parquet")
    _write(facility_rows(result), folder / "facility.parquet")
    _write(profile_rows(result), folder / "profile.parquet")
    return folder


# DuckDB's controls, fixed when the connection opens (so no statement ever runs with them off): no file,
# network or extension access from SQL (COPY TO, ATTACH, read_csv, INSTALL/LOAD all need it), no scans of
# the caller's Python variables, no autoloading, and a locked configuration so no SET can undo any of it.
QUERY_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "enable_external_access": False,
    "python_enable_replacements": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}
READ_STATEMENTS = ("SELECT",)  # also WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE: DuckDB parses them as SELECT


class QueryRefused(ValueError):
    """A query that `joulepath query` will not run: it writes, or reaches outside the run's telemetry."""


def _telemetry_connection(folder: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection locked down by QUERY_CONFIG whose only tables are the run's Parquet
    files. They are registered as Arrow datasets: pyarrow reads exactly these files, lazily, on the
    connection's behalf, so no path is ever spliced into SQL and DuckDB itself never needs file access."""
    import duckdb
    import pyarrow.dataset as ds

    con = duckdb.connect(":memory:", config=QUERY_CONFIG)
    for name in TABLES:
        path = folder / f"{name}.parquet"
        if path.is_file():
            try:
                con.register(name, ds.dataset(path, format="parquet"))
            except (pa.ArrowException, OSError) as exc:
                raise ValueError(f"{path}: not a readable Parquet file ({exc})") from None
    return con


def read_only_statements(con: duckdb.DuckDBPyConnection, sql: str) -> list[duckdb.Statement]:
    """The statements of `sql` as DuckDB's own parser reads them; anything but a read is refused. An
    in-memory DuckDB database cannot be opened read-only, so the statement type is the read-only check
    (the locked configuration already stops every write to a file)."""
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise ValueError(f"query failed: {exc}; tables: {', '.join(TABLES)}") from None
    if not statements:
        raise ValueError("query is empty; give one SELECT statement, e.g. SELECT count(*) FROM requests")
    for statement in statements:
        kind = statement.type.name
        if kind not in READ_STATEMENTS:
            raise QueryRefused(
                f"refused: {kind} statement ({statement.query.strip()[:60]!r}); joulepath query is read-only and "
                f"runs only SELECT statements (WITH, FROM, DESCRIBE, SHOW and SUMMARIZE too) over the tables "
                f"{', '.join(TABLES)}"
            )
    return statements


def query(run_dir: Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run read-only SQL over a run's telemetry; each Parquet file is a table of the same name.

    Only reads of those tables are allowed: writes (CREATE, INSERT, COPY, SET, ...) raise QueryRefused
    before anything runs, and reads of anything else (files, URLs, extensions) are refused by DuckDB.
    Several statements run in order; the last one's rows are returned.
    Example: `query(Path("runs/x"), "SELECT config, sum(energy_j) FROM requests GROUP BY config")`.
    """
    import duckdb

    folder = run_dir / "telemetry"
    if not folder.is_dir():
        raise FileNotFoundError(f"{run_dir}: no telemetry/ folder; give a folder written by `joulepath run`")
    con = _telemetry_connection(folder)
    try:
        for statement in read_only_statements(con, sql):
            cur = con.execute(statement)
        return [d[0] for d in cur.description or []], cur.fetchall()
    except duckdb.PermissionException as exc:
        raise QueryRefused(
            f"refused: the query reaches outside the run's telemetry ({_first_line(exc)}); joulepath query reads "
            f"only the tables {', '.join(TABLES)}: no files, URLs or extensions"
        ) from None
    except duckdb.Error as exc:
        raise ValueError(f"query failed: {exc}; tables: {', '.join(TABLES)}") from None
    finally:
        con.close()


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
