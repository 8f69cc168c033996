"""The Ray backend on a local Ray (`ray_address="local"`); skipped where the optional `ray` is absent.

A `run_sweep(..., ray_address="local")` starts its own Ray on this machine and stops it after (~6 s), so
the first test does that once and the others share one Ray started by a fixture (which `run_sweep` joins)."""

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

from joulepath.plan import PlanInputs
from joulepath.plan.search import candidates
from joulepath.plan.sweep import (
    FacilityYear,
    candidate_tasks,
    evaluate_candidate,
    facility_year_tasks,
    load,
    run_facility_year,
    run_sweep,
    stored_ids,
)

ray = pytest.importorskip("ray")

DAILY = 86400.0  # one step per day keeps a facility-year to milliseconds
pytestmark = pytest.mark.slow


def test_ray_rows_are_bit_identical_to_serial_rows() -> None:
    tasks = facility_year_tasks(6, step_s=DAILY)
    serial = run_sweep(run_facility_year, tasks)
    before = ray.is_initialized()  # another test's Ray may be up (test order): then it is used and left as it was
    on_ray = run_sweep(run_facility_year, tasks, ray_address="local", chunk_size=4)
    assert on_ray.num_rows == 6 and on_ray.equals(serial)
    assert ray.is_initialized() == before  # a local Ray the sweep started is stopped again


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_an_interrupted_ray_sweep_resumes_where_it_stopped(tmp_path: Path, local_ray: None) -> None:
    def dies_at_4(task: FacilityYear) -> dict[str, object]:
        # local, so Ray pickles it by value (Ray's workers cannot import this test module)
        if task.task_id == 4:
            raise ValueError("interrupted at task 4")
        return run_facility_year(task)

    tasks = facility_year_tasks(7, step_s=DAILY)
    with pytest.raises(ValueError, match="interrupted at task 4"):  # Ray re-raises the task's error type
        run_sweep(dies_at_4, tasks, tmp_path / "s", ray_address="local", chunk_size=2)
    assert stored_ids(tmp_path / "s") == {0, 1, 2, 3}  # whole chunks only
    first_part = tmp_path / "s" / "part-000000000.parquet"
    stamp = first_part.stat().st_mtime_ns
    resumed = run_sweep(run_facility_year, tasks, tmp_path / "s", ray_address="local", chunk_size=2)
    assert ray.is_initialized()  # a Ray the caller started is left running
    assert first_part.stat().st_mtime_ns == stamp  # finished parts were not rerun
    assert resumed.equals(run_sweep(run_facility_year, tasks))
    assert load(tmp_path / "s").column("task_id").to_pylist() == list(range(7))


def test_planner_candidates_on_ray_match_serial(inputs_70b: PlanInputs, local_ray: None) -> None:
    fn = functools.partial(evaluate_candidate, inputs_70b)  # a partial, not a function: Ray gets it as data
    tasks = candidate_tasks(candidates(inputs_70b))
    on_ray = run_sweep(fn, tasks, ray_address="local")
    assert on_ray.num_rows == len(tasks) > 1 and on_ray.equals(run_sweep(fn, tasks))
