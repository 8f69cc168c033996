from pathlib import Path

import pyarrow.parquet as pq
import pytest

from joulepath.plan.sweep import FacilityYear, facility_year_tasks, load, run_facility_year, run_sweep, stored_ids

DAILY = 86400.0  # one step per day keeps a facility-year to milliseconds


def test_pool_rows_are_bit_identical_to_serial_rows() -> None:
    tasks = facility_year_tasks(6, step_s=DAILY)
    serial = run_sweep(run_facility_year, tasks)
    pool = run_sweep(run_facility_year, tasks, workers=2, chunk_size=3)
    assert serial.num_rows == 6 and serial.equals(pool)
    assert len(set(serial.column("preset").to_pylist())) > 1  # the tasks differ


class Interrupted(RuntimeError):
    pass


def _dies_at_4(task: FacilityYear) -> dict[str, object]:
    if task.task_id == 4:
        raise Interrupted
    return run_facility_year(task)


def test_an_interrupted_sweep_resumes_where_it_stopped(tmp_path: Path) -> None:
    tasks = facility_year_tasks(7, step_s=DAILY)
    with pytest.raises(Interrupted):
        run_sweep(_dies_at_4, tasks, tmp_path / "s", chunk_size=2)
    assert stored_ids(tmp_path / "s") == {0, 1, 2, 3}  # whole chunks only
    first_part = tmp_path / "s" / "part-000000000.parquet"
    stamp = first_part.stat().st_mtime_ns
    resumed = run_sweep(run_facility_year, tasks, tmp_path / "s", chunk_size=2)
    assert first_part.stat().st_mtime_ns == stamp  # finished parts were not rerun
    assert resumed.equals(run_sweep(run_facility_year, tasks))
    assert load(tmp_path / "s").column("task_id").to_pylist() == list(range(7))
    assert pq.read_table(first_part).num_rows == 2


def test_ray_without_the_package_says_how_to_get_it() -> None:
    pytest.importorskip("pyarrow")
    try:
        import ray  # noqa: F401

        pytest.skip("ray is installed here")
    except ImportError:
        pass
    with pytest.raises(ValueError, match="optional `ray` package"):  # a user error: one line from the CLI
        run_sweep(run_facility_year, facility_year_tasks(1, step_s=DAILY), ray_address="local")
