import numpy as np
import pytest

from joulepath.run import build_trace, new_run_dir, run
from joulepath.scenario import Scenario, parse_scenario

from .conftest import shared_file

ANALYTIC = {"serve": {"enabled": False}}  # projection and facility only; real execution: test_pipeline.py


def test_default_run_energy_adds_up() -> None:
    result = run(parse_scenario(ANALYTIC))
    s, w = result.summary, result.waterfall
    assert w.wall_j == pytest.approx(sum(st.energy_j for st in w.stages))
    assert s.wall_energy_j == pytest.approx(w.wall_j)
    assert s.device_energy_j == pytest.approx(np.sum(result.projection.device_power_w) * result.projection.bin_s)
    assert s.wall_j_per_token == pytest.approx(w.wall_j / s.served_output_tokens)
    assert 0 < s.utilisation <= 1
    assert s.peak_it_power_w >= s.avg_it_power_w
    assert result.analysis_energy.total_energy_j > 0


def test_assumed_tdp_is_labelled_in_the_result() -> None:
    scenario = parse_scenario({**ANALYTIC, "fleet": {"accelerator": "tpu-v6e", "count": 4, "assumed_tdp_w": 300}})
    result = run(scenario)
    assert "TDP assumed 300 W" in result.waterfall.stage("device").provenance
    assert "TDP assumed 300 W" in result.summary.provenance


def test_time_scale_raises_load() -> None:
    base = build_trace(Scenario().workload)
    faster = build_trace(parse_scenario({"workload": {"time_scale": 16.0}}).workload)
    assert len(faster) == pytest.approx(2 * len(base), rel=0.1)


def test_azure_trace_scenario_runs() -> None:
    path = shared_file("azure_llm_inference_2023_conv.csv")
    scenario = parse_scenario({**ANALYTIC, "workload": {"kind": "azure_csv", "path": str(path), "duration_s": 600}})
    result = run(scenario)
    assert result.trace.n_requests > 2000 and result.trace_source.startswith("measured")


def test_run_dirs_are_unique(tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = new_run_dir(tmp_path, "x", "t")
    b = new_run_dir(tmp_path, "x", "t")
    assert a != b and a.exists() and b.exists()
