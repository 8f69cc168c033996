"""The planner and sweep commands: `joulepath plan`, `joulepath sweep`, `joulepath sweep-query`. Heavy
work loads inside the commands."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

import typer

from joulepath.cli.common import JsonFlag, app, console, guarded, print_json, progress


@app.command("plan")
def plan_cmd(
    scenario_path: Annotated[Path, typer.Argument(metavar="SCENARIO.toml", help="A TOML file with a [plan] table.")],
    trace: Annotated[
        Path | None, typer.Option(help="Azure-format trace CSV: its daily shape and request sizes.")
    ] = None,
    scale: Annotated[float, typer.Option(help="Multiply the trace's rate (with --trace).")] = 1.0,
    all_candidates: Annotated[
        bool, typer.Option("--all", help="With --json: every candidate, not only the front.")
    ] = False,
    html_path: Annotated[
        Path | None, typer.Option("--html", help="Also write the plan as an HTML page (front, curves, reasons).")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Plan an AI factory: accelerators, count, parallelism, batch cap, precision, power cap, racks and
    cooling for the demand and SLOs on the site; Pareto front, chosen plan, diminishing returns."""
    from joulepath.plan.output import plan_dict, summary_lines
    from joulepath.plan.search import plan
    from joulepath.plan.toml_input import read_plan

    def run() -> Any:
        demand = _trace_demand(trace, scale) if trace else None
        return plan(read_plan(scenario_path, demand))

    with progress(quiet=json_out) as bar:
        bar.add_task("evaluating candidates (hardware model + facility twin)")
        result = guarded(run)
    if html_path is not None:
        from joulepath.plan.html import write_plan_html

        guarded(lambda: write_plan_html(result, html_path))
    if json_out:
        print_json(plan_dict(result, all_candidates) | ({"html": str(html_path)} if html_path else {}))
        return
    for line in summary_lines(result):
        console.print(line, highlight=False)
    if html_path is not None:
        console.print(f"report: {html_path}", highlight=False)


def _trace_demand(path: Path, scale: float) -> Any:
    from joulepath.plan.inputs import Demand
    from joulepath.workload import read_azure_csv

    t = read_azure_csv(path)
    d = Demand.from_requests(t.arrival_s, t.prompt_tokens.astype(float), t.output_tokens.astype(float))
    return d.scaled(scale) if scale != 1.0 else d


@app.command("sweep")
def sweep_cmd(
    store: Annotated[Path, typer.Argument(help="Result folder (Parquet parts); an existing one is resumed.")],
    scenario_path: Annotated[Path | None, typer.Option("--plan", help="Sweep this plan's candidates instead.")] = None,
    runs: Annotated[int, typer.Option(help="Facility-years to run (without --plan).")] = 100,
    step_s: Annotated[float, typer.Option(help="Twin step of each facility-year, s.")] = 900.0,
    workers: Annotated[int, typer.Option(help="Local processes (1 = serial).")] = 1,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Run on Ray (needs the optional `ray` package): 'local' starts one on this machine for the sweep, "
            "'auto' joins the one `ray start` runs here, HOST:6379 a cluster's head node."
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Run many facility-years or planner candidates into a resumable Parquet store; the rows are the
    same whichever backend runs them."""
    from joulepath.plan import sweep

    def run() -> Any:
        if scenario_path is None:
            tasks: list[Any] = sweep.facility_year_tasks(runs, step_s)
            fn: Any = sweep.run_facility_year
        else:
            from joulepath.plan.search import candidates
            from joulepath.plan.toml_input import read_plan

            inputs = read_plan(scenario_path)
            tasks, fn = sweep.candidate_tasks(candidates(inputs)), functools.partial(sweep.evaluate_candidate, inputs)
        with progress(with_bar=True, quiet=json_out) as bar:
            task = bar.add_task(f"sweep into {store}", total=len(tasks))
            return sweep.run_sweep(
                fn, tasks, store, workers, ray_address, progress=lambda d, n: bar.update(task, completed=d)
            )

    table = guarded(run)
    if json_out:
        print_json({"store": str(store), "rows": table.num_rows, "columns": table.column_names})
        return
    console.print(f'{table.num_rows} rows in {store} (joulepath sweep-query {store} "SELECT ... FROM sweep")')


@app.command("sweep-query")
def sweep_query_cmd(
    store: Annotated[Path, typer.Argument(help="A folder written by `joulepath sweep`.")],
    sql: Annotated[str, typer.Argument(help="SELECT over the table `sweep`.")],
    json_out: JsonFlag = False,
) -> None:
    """Query a sweep's rows with DuckDB, read-only (the same locked connection as `joulepath query`)."""
    columns, rows = guarded(lambda: query_sweep(store, sql))
    if json_out:
        print_json([dict(zip(columns, r, strict=True)) for r in rows])
        return
    for r in [tuple(columns), *rows]:
        console.print("  ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in r), highlight=False)


def query_sweep(store: Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Read-only SQL over a sweep store, registered as the table `sweep` (an Arrow dataset of its parts)."""
    import duckdb
    import pyarrow.dataset as ds

    from joulepath.report.telemetry import QUERY_CONFIG, read_only_statements

    parts = sorted(store.glob("part-*.parquet"))
    if not parts:
        raise FileNotFoundError(f"{store}: no part-*.parquet files; run `joulepath sweep {store}` first")
    con = duckdb.connect(":memory:", config=QUERY_CONFIG)
    try:
        con.register("sweep", ds.dataset([str(p) for p in parts], format="parquet"))
        for statement in read_only_statements(con, sql):
            cur = con.execute(statement)
        return [d[0] for d in cur.description or []], cur.fetchall()
    except duckdb.Error as exc:
        raise ValueError(f"query failed: {exc}; table: sweep") from None
    finally:
        con.close()
