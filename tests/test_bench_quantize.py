"""The quantization benchmark's core on a tiny model: every config timed, the table's fields present and sane."""

from __future__ import annotations

import math

import torch

from joulepath.bench.quantize import SPARSE, add_best, headline, measure_model
from joulepath.optimize.quant import ALL_MODES, INT4_MODES, VNNI_MODES, available_modes


def test_measure_model_tiny_table_is_complete_and_sane() -> None:
    threads = torch.get_num_threads()
    try:
        table = measure_model("dummy:tiny-llama", threads=[1], reps=2, steps=2, calibration_per_cell=1)
    finally:
        torch.set_num_threads(threads)
    add_best(table, lambda name: True)
    block = table["threads"]["1"]
    rows = block["configs"]
    expected = {
        f"{name}@b{b}" for name in ("fp32", "int8_dynamic", "int8_weight_only", "int4_weight_only") for b in (1, 8)
    }
    expected |= {f"{SPARSE}@b1"}
    expected |= {f"{m}@b{b}" for m in VNNI_MODES if available_modes()[m] is None for b in (1, 8)}
    if table["transformers_note"] is None:
        expected |= {"transformers_int8@b1", "transformers_int8@b8"}
    assert expected <= set(rows), set(rows) ^ expected
    assert block["read_roofline_gb_s"] > 0.1
    for key, row in rows.items():
        tps = row["tokens_per_s"]
        assert 0 < tps["min"] <= tps["median"] <= tps["max"] < 1e6, key
        assert row["weight_bytes_per_step"] > 0, key
        assert 0 < row["roofline_fraction"] < 5, key  # a tiny model sits in cache: above 1 is possible, not 5
        assert row["j_per_token"] >= 0 and row["energy_provenance"], key
        if not key.startswith(("fp32", "transformers")):
            assert row["speedup_vs_fp32"]["median"] > 0, key
    # quantized configs read fewer bytes per step than fp32 (int4 fewest)
    fp32_bytes = rows["fp32@b1"]["weight_bytes_per_step"]
    assert rows["int4_weight_only@b1"]["weight_bytes_per_step"] < rows["int8_dynamic@b1"]["weight_bytes_per_step"]
    assert rows["int8_dynamic@b1"]["weight_bytes_per_step"] < fp32_bytes
    assert rows["int4_weight_only@b1"]["group_size"] == 64  # tiny-llama has 64-wide inputs: 128 cannot divide them
    head = headline(table, 1, None)
    for key in ("int8_speedup_b1", "int4_speedup_b1", "int8_speedup_b8", "best_speedup_b1", "sparsity_speedup_b1"):
        assert head[key] is not None and math.isfinite(head[key]) and head[key] > 0, key
    assert head["best_lever_b1"] in {*ALL_MODES, SPARSE}
    assert head["int8_route_b1"] in {"int8_dynamic", "int8_vnni"} and head["int4_route_b1"] in INT4_MODES
    assert head["int4_speedup_b1"] == head[f"{head['int4_route_b1']}_speedup_b1"]  # the fastest route's figure
    assert head["int8_accuracy_delta_pts"] is None  # no gate was run
