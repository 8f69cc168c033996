import dataclasses

import numpy as np
import pytest

from joulepath.hw import Deployment, get_accelerator, get_model_preset
from joulepath.hw.calibration import MeasuredConfig, calibrate, load_mlenergy, mape, nnls, predict
from joulepath.hw.perf import Efficiency, steady_state

from ..conftest import shared_file


def test_nnls_solves_a_known_problem() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((50, 4))
    x_true = np.array([2.0, 0.0, 0.5, 3.0])
    x = nnls(a, a @ x_true)
    np.testing.assert_allclose(x, x_true, atol=1e-6)
    assert (nnls(a, -a @ x_true) >= 0).all()


def _synthetic_rows(eff: Efficiency, prompt: float) -> list[MeasuredConfig]:
    rows = []
    for preset, tp in (("llama-3.1-8b", 1), ("qwen3-32b", 2), ("llama-3.1-70b", 4), ("qwen3-30b-a3b", 1)):
        spec = get_model_preset(preset)
        dep = Deployment(get_accelerator("h100-sxm"), tensor_parallel=tp)
        for batch in (4, 16, 64, 256):
            ss = steady_state(spec, dep, batch, prompt, 600, eff)
            group = "MoE" if spec.n_experts else "Dense Transformer"
            rows.append(
                MeasuredConfig(
                    preset,
                    "chat",
                    group,
                    "H100",
                    spec,
                    dep,
                    batch,
                    600,
                    ss.power_w,
                    ss.energy_per_output_token_j,
                    ss.itl_s,
                )
            )
    return rows


def test_calibration_recovers_a_known_model() -> None:
    truth = dataclasses.replace(Efficiency(), linear_time_factor=1.2, seq_overhead_s=3e-5, hbm_pj_per_byte=60.0)
    rows = _synthetic_rows(truth, prompt=1024)
    cal = calibrate(rows, sweeps=1)
    assert cal.prompt_tokens_by_task["chat"] == 1024
    preds = predict(rows, cal)
    assert mape(preds, "itl") < 1.0 and mape(preds, "energy") < 2.0


def test_mlenergy_rows_load_and_hybrids_are_excluded() -> None:
    rows = load_mlenergy(shared_file("mlenergy_v3_llm_configs.csv"))
    assert len(rows) == 565
    hybrids = [r for r in rows if r.architecture.startswith("Mamba")]
    assert hybrids and all(r.spec is None for r in hybrids)
    assert all(r.spec is not None for r in rows if r.architecture in ("Dense Transformer", "MoE"))


def test_malformed_mlenergy_row_names_the_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.csv"
    bad.write_text("model_id,task\nQwen/Qwen3-8B,chat\n")
    with pytest.raises(ValueError, match=r"bad.csv:2"):
        load_mlenergy(bad)
