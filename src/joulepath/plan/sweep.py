"""Sweeps: many facility-years or planner candidates, serial, on a local process pool, or on Ray, with
the same rows whichever runs them (each task is a pure function of its inputs), stored as Parquet in a
resumable folder.

A store is a folder of `part-<first task id>.parquet` files, one per finished chunk, each written to a
temporary name and renamed (a crash leaves whole parts only). Re-running the same sweep into the same
folder skips the task ids already stored, so an interrupted sweep continues where it stopped; `load`
returns every stored row sorted by `task_id`.

    >>> tasks = facility_year_tasks(2, step_s=86400.0)
    >>> t = run_sweep(run_facility_year, tasks)
    >>> t.num_rows, t.column("task_id").to_pylist()
    (2, [0, 1])
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from joulepath.facility import Clock, get_preset, run_twin
from joulepath.facility.grid import GRID_PROFILES
from joulepath.facility.weather import CLIMATES
from joulepath.plan.evaluate import Candidate, evaluate
from joulepath.plan.inputs import PlanInputs
from joulepath.plan.output import evaluation_dict
from joulepath.plan.toml_input import diurnal_curve

Row = dict[str, Any]
Progress = Callable[[int, int], None]  # (tasks done, tasks in the sweep)


class Task(Protocol):
    """Anything with a unique integer id (a frozen dataclass field is enough)."""

    @property
    def task_id(self) -> int: ...


@dataclass(frozen=True)
class FacilityYear:
    """One facility-year: a design on a site, an IT load with a daily shape, a weather/grid seed."""

    task_id: int
    preset: str
    climate: str
    grid_region: str
    it_mw: float  # daily-mean IT board power
    peak_to_mean: float
    seed: int
    step_s: float = 900.0


def facility_year_tasks(n: int, step_s: float = 900.0) -> list[FacilityYear]:
    """`n` facility-years cycling over designs, climates, grid regions, sizes and load shapes (seeded)."""
    presets = ("modern-air", "enterprise-air", "hyperscale-liquid", "immersion")
    grid = itertools.product((1.0, 10.0, 50.0), (1.0, 1.3), sorted(GRID_PROFILES), sorted(CLIMATES), presets)
    points = itertools.islice(itertools.cycle(grid), n)  # designs vary fastest, then climates, grids, ...
    return [FacilityYear(i, p, c, g, mw, r, seed=i, step_s=step_s) for i, (mw, r, g, c, p) in enumerate(points)]


def run_facility_year(task: FacilityYear) -> Row:
    """The twin for one facility-year (its own synthetic weather and grid from the task's seed); the
    task's fields and the year's totals (estimated: facility twin)."""
    cfg = get_preset(task.preset).replace(climate=task.climate, grid_region=task.grid_region, seed=task.seed)
    clock = Clock.year(task.step_s)
    hour = clock.t_s / 3600.0 % 24.0
    shape = np.interp(hour, np.arange(24) + 0.5, diurnal_curve(1.0, task.peak_to_mean), period=24.0)
    board_w = task.it_mw * 1e6 * shape
    m = run_twin(cfg, board_w, clock, design_board_w=task.it_mw * 1e6 * task.peak_to_mean).metrics
    return asdict(task) | {
        "pue": m.pue,
        "wue_l_per_kwh": m.wue_l_per_kwh,
        "facility_energy_j": m.facility_energy_j,
        "it_energy_j": m.it_energy_j,
        "carbon_g": m.carbon_g,
        "cost_usd": m.cost_usd,
        "water_l": m.water_l,
        "peak_facility_w": m.peak_facility_w,
        "provenance": m.provenance,
    }


@dataclass(frozen=True)
class CandidateTask:
    """One planner candidate as a sweep task."""

    task_id: int
    candidate: Candidate


def candidate_tasks(candidates: Sequence[Candidate]) -> list[CandidateTask]:
    return [CandidateTask(i, c) for i, c in enumerate(candidates)]


def evaluate_candidate(inputs: PlanInputs, task: CandidateTask) -> Row:
    """A planner candidate's evaluation as a flat row (use with `functools.partial(evaluate_candidate, inputs)`)."""
    return {"task_id": task.task_id} | evaluation_dict(evaluate(task.candidate, inputs))


def stored_ids(store: Path) -> set[int]:
    """Task ids already in a store (empty when it does not exist)."""
    if not store.is_dir():
        return set()
    ids: set[int] = set()
    for part in sorted(store.glob("part-*.parquet")):
        ids.update(pq.read_table(part, columns=["task_id"]).column("task_id").to_pylist())
    return ids


def _write_part(store: Path, rows: list[Row]) -> None:
    store.mkdir(parents=True, exist_ok=True)
    path = store / f"part-{rows[0]['task_id']:09d}.parquet"
    tmp = path.with_suffix(".tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    os.replace(tmp, path)


def load(store: Path) -> pa.Table:
    """Every stored row, sorted by task id."""
    parts = [pq.read_table(p) for p in sorted(store.glob("part-*.parquet"))]
    if not parts:
        raise FileNotFoundError(f"{store}: no part-*.parquet files; run a sweep into it first")
    table = pa.concat_tables(parts, promote_options="permissive")  # a part whose column is all null widens
    return table.sort_by("task_id")


#: Rows of `fn` over tasks, in task order, as they finish.
RowStream = Callable[[Callable[[Any], Row], list[Any]], Iterator[Row]]


@contextlib.contextmanager
def _backend(workers: int, ray_address: str | None) -> Iterator[RowStream]:
    """A row stream on the chosen backend: serial, a process pool, or Ray. All tasks are submitted at
    once and results come back in task order, so parts are written without waiting at chunk edges."""
    if ray_address is not None:
        with _ray_backend(ray_address) as stream:
            yield stream
    elif workers <= 1:
        yield lambda fn, tasks: map(fn, tasks)
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        try:
            yield lambda fn, tasks: pool.map(fn, tasks, chunksize=max(1, min(16, len(tasks) // (8 * workers))))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _run_batch(fn: Callable[[Any], Row], tasks: list[Any]) -> list[Row]:
    """One Ray task: `fn` over a few sweep tasks, so scheduling costs once per batch, not per year."""
    return [fn(t) for t in tasks]


@contextlib.contextmanager
def _ray_backend(address: str) -> Iterator[RowStream]:
    """Ray, `address` as `ray.init` reads it: "local" starts a Ray on this machine for this sweep and stops
    it after; "auto" joins the one `ray start` runs here; "HOST:6379" a cluster's head; "ray://HOST:10001"
    Ray Client. A Ray this process already joined is used as it is (and left running)."""
    try:
        import ray  # optional extra: pip install 'joulepath[ray]'
    except ImportError as exc:
        raise ValueError("--ray-address needs the optional `ray` package (pip install 'joulepath[ray]')") from exc
    joined_here = not ray.is_initialized()
    if joined_here:
        # no dashboard for a throwaway local Ray (None: a cluster's own setting)
        ray.init(address=address, log_to_driver=False, include_dashboard=False if address == "local" else None)
    run_batch = ray.remote(_run_batch)

    def stream(fn: Callable[[Any], Row], tasks: list[Any]) -> Iterator[Row]:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        size = max(1, min(16, len(tasks) // (8 * cpus)))  # as the pool's chunks: >= 8 batches per CPU
        fn_ref = ray.put(fn)  # shipped to the object store once, not with every batch
        refs = [run_batch.remote(fn_ref, tasks[i : i + size]) for i in range(0, len(tasks), size)]
        for ref in refs:
            yield from ray.get(ref)  # in task order: rows as a serial run's
        # A stopped sweep cancels nothing: cancelling a task whose reply is still in flight aborts Ray 2.60's
        # core worker ("Tried to complete task that was not pending", seen here). Stopping a local Ray ends
        # its tasks; a cluster drops the tasks of a driver that disconnects.

    try:
        yield stream
    finally:
        if joined_here:
            ray.shutdown()  # stops a "local" Ray; only disconnects from a cluster


def run_sweep(
    fn: Callable[[Any], Row],
    tasks: Sequence[Task],
    store: Path | None = None,
    workers: int = 1,
    ray_address: str | None = None,
    chunk_size: int = 50,
    progress: Progress | None = None,
) -> pa.Table:
    """Run `fn` on every task not yet in `store` and return all rows (stored ones included), sorted by
    task id. `fn` must be a module-level function of the task alone (picklable; no shared state), which
    is what makes serial, pool and Ray rows identical."""
    done = stored_ids(store) if store else set()
    todo = [t for t in tasks if t.task_id not in done]
    rows: list[Row] = []
    with _backend(workers, ray_address) as stream:
        pending: list[Row] = []
        for row in stream(fn, todo):
            pending.append(row)
            if len(pending) == chunk_size or len(rows) + len(pending) == len(todo):
                if store is not None:
                    _write_part(store, pending)
                rows.extend(pending)
                pending = []
                if progress:
                    progress(len(done) + len(rows), len(tasks))
    if store is not None and (done or rows):
        return load(store)
    if not rows:  # nothing stored or run (an empty sweep)
        return pa.table({"task_id": pa.array([], pa.int64())})
    return pa.Table.from_pylist(rows).sort_by("task_id")
