"""`joulepath query` is read-only and sees only the run's own telemetry: every escape below (writing a
file, attaching a database, reading a file outside the run, extensions, writes, unlocking the
configuration) is refused with a clear message and leaves no trace on disk."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from joulepath.cli import app
from joulepath.report.telemetry import QueryRefused, query

runner = CliRunner()


def _write_run(folder: Path) -> Path:
    """A run folder with tiny telemetry tables."""
    telemetry = folder / "telemetry"
    telemetry.mkdir(parents=True)
    requests = {"config": ["baseline", "optimized", "optimized"], "request_id": [0, 1, 2], "energy_j": [3.0, 1.0, 2.0]}
    facility = {"config": ["optimized"] * 2, "t_s": [0.0, 3600.0], "pue": [1.2, 1.3]}
    pq.write_table(pa.table(requests), telemetry / "requests.parquet")
    pq.write_table(pa.table(facility), telemetry / "facility.parquet")
    pq.write_table(pa.table({"name": ["attention", "mlp"], "time_s": [0.5, 0.25]}), telemetry / "profile.parquet")
    return folder


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    (tmp_path / "outside.csv").write_text("secret,42\n")
    return _write_run(tmp_path / "run")


def _sql_path(path: Path) -> str:
    """A path as the inside of an SQL string literal."""
    return str(path).replace("'", "''")


def _telemetry_bytes(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run_dir / "telemetry").iterdir())}


def test_reads_of_the_run_tables_still_work(run_dir: Path) -> None:
    columns, rows = query(run_dir, "SELECT config, sum(energy_j) AS e FROM requests GROUP BY config ORDER BY config")
    assert columns == ["config", "e"] and rows == [("baseline", 3.0), ("optimized", 3.0)]
    joined = "SELECT count(*) FROM requests r JOIN facility f USING (config)"
    assert query(run_dir, joined)[1] == [(4,)]
    assert query(run_dir, "WITH p AS (SELECT * FROM profile) SELECT max(time_s) FROM p")[1] == [(0.5,)]
    assert query(run_dir, "FROM facility SELECT avg(pue)")[1] == [(pytest.approx(1.25),)]
    assert {r[0] for r in query(run_dir, "SHOW TABLES")[1]} == {"requests", "facility", "profile"}
    assert len(query(run_dir, "DESCRIBE requests")[1]) == 3
    assert query(run_dir, "SELECT 1; SELECT count(*) FROM profile")[1] == [(2,)]  # the last statement's rows


def test_a_run_folder_with_a_quote_in_its_name_is_queryable(tmp_path: Path) -> None:
    run = _write_run(tmp_path / "it's a run")  # the folder's path is never spliced into SQL
    assert query(run, "SELECT count(*) FROM requests")[1] == [(3,)]


@pytest.mark.parametrize(
    "sql",
    ["COPY requests TO '{out}'", "COPY (SELECT * FROM requests) TO '{out}' (FORMAT csv)", "EXPORT DATABASE '{out}'"],
)
def test_copy_to_a_file_is_refused_and_writes_nothing(run_dir: Path, tmp_path: Path, sql: str) -> None:
    out = tmp_path / "stolen.csv"
    with pytest.raises(QueryRefused, match=r"refused: (COPY|EXPORT) statement"):
        query(run_dir, sql.format(out=out))
    assert not out.exists()


def test_a_write_after_a_read_is_refused_before_anything_runs(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "later.csv"
    with pytest.raises(QueryRefused):
        query(run_dir, f"SELECT 1; COPY requests TO '{out}'")
    assert not out.exists()


def test_attach_is_refused(run_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "other.duckdb"
    with pytest.raises(QueryRefused, match="ATTACH statement"):
        query(run_dir, f"ATTACH '{db}' AS other")
    assert not db.exists()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('{outside}')",
        "SELECT * FROM '{outside}'",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM glob('{run}/*')",
        "SELECT * FROM read_parquet('{run}/telemetry/requests.parquet')",  # only through the tables
        "SELECT * FROM requests, read_csv('{outside}')",
        "SELECT * FROM read_csv('https://example.com/data.csv')",
    ],
)
def test_files_outside_the_run_tables_cannot_be_read(run_dir: Path, tmp_path: Path, sql: str) -> None:
    with pytest.raises(QueryRefused, match="reaches outside the run's telemetry") as refused:
        query(run_dir, sql.format(outside=_sql_path(tmp_path / "outside.csv"), run=_sql_path(run_dir)))
    assert "secret" not in str(refused.value)


@pytest.mark.parametrize("sql", ["INSTALL httpfs", "LOAD httpfs", "FORCE INSTALL httpfs"])
def test_extensions_cannot_be_installed_or_loaded(run_dir: Path, sql: str) -> None:
    with pytest.raises(QueryRefused, match="LOAD statement"):
        query(run_dir, sql)


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE copy AS SELECT * FROM requests",
        "CREATE TEMP TABLE copy AS SELECT * FROM requests",
        "INSERT INTO requests VALUES ('x', 9, 9.0)",
        "UPDATE requests SET energy_j = 0",
        "DELETE FROM requests",
        "DROP VIEW requests",
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "RESET enable_external_access",
        "PRAGMA enable_profiling",
        "CALL pragma_version()",
    ],
)
def test_writes_and_configuration_changes_are_refused(run_dir: Path, sql: str) -> None:
    before = _telemetry_bytes(run_dir)
    with pytest.raises(QueryRefused, match="read-only"):
        query(run_dir, sql)
    assert _telemetry_bytes(run_dir) == before
    assert query(run_dir, "SELECT count(*) FROM requests")[1] == [(3,)]


def test_python_variables_are_not_tables(run_dir: Path) -> None:
    caller_secret = pa.table({"password": ["hunter2"]})  # DuckDB's replacement scan would find this name
    with pytest.raises(ValueError, match="query failed"):
        query(run_dir, "SELECT * FROM caller_secret")
    assert caller_secret.num_rows == 1


def test_cli_refuses_with_one_line_and_no_traceback(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.csv"
    result = runner.invoke(app, ["query", str(run_dir), f"COPY requests TO '{out}'"])
    assert result.exit_code == 2 and "refused" in result.output and "read-only" in result.output
    assert "Traceback" not in result.output and not out.exists()
    read = runner.invoke(app, ["query", str(run_dir), "SELECT * FROM read_csv('/etc/passwd')"])
    assert read.exit_code == 2 and "outside the run's telemetry" in read.output
    ok = runner.invoke(app, ["query", str(run_dir), "SELECT count(*) AS n FROM requests", "--json"])
    assert ok.exit_code == 0 and '"n": 3' in ok.output
