from pathlib import Path

from joulepath.plan.sweep import run_facility_year, run_sweep


def test_an_empty_sweep_into_a_new_store_returns_no_rows(tmp_path: Path) -> None:
    table = run_sweep(run_facility_year, [], tmp_path / "s")
    assert table.num_rows == 0 and table.column_names == ["task_id"]
