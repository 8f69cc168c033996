"""benchmarks/quantize_cuda.py: its code path checked on this CPU (`--cpu-smoke`) before GPU time is spent."""

from __future__ import annotations

import pytest
import torch

from joulepath.bench import quantize_cuda


def test_cpu_smoke_runs_every_variant_reports_the_headline_fields_and_hands_over_partial_results() -> None:
    seen: list[dict] = []
    r = quantize_cuda.run(quick=False, smoke=True, reps=2, steps=3, per_cell=0, partial=seen.append)
    assert len(seen) == 1 and not seen[0]["complete"] and "dummy:tiny-llama" in seen[0]["models"]  # after each model
    table = r["models"]["dummy:tiny-llama"]
    assert set(table["b1"]) == {"bf16", "bf16_eager", *quantize_cuda.LEVERS}
    for batch in (1, 8):
        for name, row in table[f"b{batch}"].items():
            assert row["tokens_per_s"] > 0 and row["achieved_gb_s"] > 0, name
            assert row["speedup_vs_bf16"]["min"] <= row["speedup_vs_bf16"]["median"] <= row["speedup_vs_bf16"]["max"]
        assert table[f"b{batch}"]["bf16"]["greedy_tokens_equal_to_bf16"] == 1.0
    assert table["b1"]["int8_weight_only"]["weight_bytes"] < table["b1"]["bf16"]["weight_bytes"] / 3  # fp32 here
    assert all(0 <= v["prefill_top1_agreement"] <= 1 for v in table["numerics"].values())
    for key in ("fp8_speedup_b1", "int8_speedup_b8", "int4_speedup_b1", "graph_speedup_b1"):
        assert r[key] is not None and r[key] > 0
    assert r["cpu_smoke"] and r["device"] == "cpu" and r["complete"]
    assert all(row["energy_window_s"] > 0 for row in table["b8"].values())


def test_without_cuda_it_says_so_and_measures_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    assert quantize_cuda.main([]) == 0
    assert "no CUDA device" in capsys.readouterr().out
