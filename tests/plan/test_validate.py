from pathlib import Path

import pytest

from joulepath.plan.validate import ITL_TARGETS_S, summary, validate

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mlenergy_v3_llm_configs.csv"
HEADER = (
    "model_id,task,architecture,total_params_b,activated_params_b,weight_precision,gpu_model,num_gpus,tensor_parallel,"
    "expert_parallel,data_parallel,max_num_seqs,avg_batch_size,avg_output_len,avg_power_w,energy_per_token_j,"
    "energy_per_request_j,output_tokens_per_s,median_itl_ms,p90_itl_ms,p99_itl_ms"
)


def _row(gpu: str, cap: int, j: float, itl_ms: float) -> str:
    return (
        f"meta-llama/Llama-3.1-8B-Instruct,lm-arena-chat,Dense Transformer,8,8,bfloat16,{gpu},1,1,1,1,{cap},{cap},"
        f"500,500,{j},1,1,{itl_ms},{itl_ms},{itl_ms}"
    )


def test_regret_is_the_measured_energy_of_the_pick_over_the_measured_best(tmp_path: Path) -> None:
    """Measured numbers made up so the model's ranking (bigger batch: fewer J/token) is right at one target
    and wrong at another: at 30 ms the measured best is batch 64 while the model picks batch 128."""
    f = tmp_path / "t.csv"
    rows = [_row("H100", 8, 1.0, 9.0), _row("H100", 64, 0.25, 12.0), _row("H100", 128, 0.30, 14.0)]
    f.write_text("\n".join([HEADER, *rows]) + "\n")
    v = validate(f, targets_s=(0.010, 0.030))
    assert [c.target_itl_s for c in v.cases] == [0.010, 0.030]
    small, large = v.cases
    assert small.best.batch_cap == 8
    assert large.best.batch_cap == 64 and large.pick.batch_cap == 128
    assert large.regret_frac == pytest.approx(0.30 / 0.25 - 1)
    assert summary(v)["cases"] == 2


@pytest.mark.skipif(not DATA.is_file(), reason="shared ML.ENERGY data absent")
def test_planner_regret_on_the_measured_table_meets_the_goal() -> None:
    v = validate(DATA, ITL_TARGETS_S)
    assert v.n_groups >= 20 and len(v.cases) > 100
    assert v.median_regret_pct <= 10.0  # issue 20's goal
    assert v.exact_pick_rate > 0.2
