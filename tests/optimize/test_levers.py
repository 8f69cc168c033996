"""Levers behind the quality gate: names, verdicts with opt-outs, the verdict cache, and the main job's use."""

import pytest
import torch

from joulepath.model import DenseCausalAttention
from joulepath.optimize import levers
from joulepath.optimize.levers import Lever, choose_lever, gate_examples, parse_lever

TINY = "jp-small"  # golden prompts must fit its context; 4.8 M parameters, fast


def test_lever_names_round_trip_and_bad_names_say_what_is_allowed() -> None:
    assert parse_lever("int8_dynamic") == Lever("int8_dynamic")
    assert parse_lever("int4_weight_only:g32+skip=output,w2") == Lever("int4_weight_only", 32, ("output", "w2"))
    assert parse_lever(Lever("int4_weight_only", 64, ("output",)).name) == Lever("int4_weight_only", 64, ("output",))
    with pytest.raises(ValueError, match="must be one of int8_dynamic"):
        parse_lever("fp3")
    with pytest.raises(ValueError, match="applies to int4_weight_only and int4_vnni only"):
        parse_lever("int8_dynamic:g32")


def test_a_lever_that_loses_accuracy_is_refused_after_every_opt_out_and_verdicts_are_cached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    every_cell = gate_examples(1)
    assert len(every_cell) == 24 and len({(e.skill, e.level) for e in every_cell}) == 24
    examples = every_cell[::3]  # 8 examples: the gate's logic, not its statistics, is under test
    strict = choose_lever(TINY, "int8_weight_only", examples, max_drop_points=-1.0)  # must *gain* a point
    assert [v.lever for v in strict] == ["int8_weight_only", "int8_weight_only+skip=output",
                                         "int8_weight_only+skip=output,w2"]  # fmt: skip
    assert not any(v.passed for v in strict) and "FAIL" in strict[0].report
    v = strict[0]
    assert v.examples == 8 and 0 <= v.greedy_agreement <= 1 and v.mean_kl >= 0 and 1.0 <= v.bytes_per_weight < 1.1
    assert {s.skill for s in v.skills} == {e.skill for e in examples}
    monkeypatch.setattr(levers, "evaluate", lambda *a, **k: pytest.fail("a cached verdict was recomputed"))
    again = choose_lever(TINY, "int8_weight_only", examples, max_drop_points=-1.0)
    assert again == strict


def test_a_lever_within_the_allowed_drop_passes_at_once() -> None:
    verdicts = choose_lever(TINY, "int8_weight_only", gate_examples(1)[:8], max_drop_points=1.0, use_cache=False)
    assert len(verdicts) == 1 and verdicts[0].passed and verdicts[0].drop_points <= 1.0


def test_teal_is_a_lever_by_name_and_applies_with_calibration() -> None:
    from joulepath.model import load_model
    from joulepath.optimize.levers import apply_lever
    from joulepath.optimize.sparsity import measured_sparsity, sparse_modules

    assert parse_lever("teal:0.4") == Lever("teal", target=0.4) and Lever("teal", target=0.4).name == "teal:0.4"
    with pytest.raises(ValueError, match="target sparsity in"):
        parse_lever("teal:1.5")
    loaded = load_model(TINY)
    assert not sparse_modules(loaded.model)
    assert apply_lever(loaded, parse_lever("teal:0.5")) is None  # bytes per weight unchanged
    assert sparse_modules(loaded.model)
    loaded.model(torch.tensor([5, 6, 7]), torch.arange(3), DenseCausalAttention([3]))
    assert 0.2 < measured_sparsity(loaded.model) < 0.8


def test_the_int8_kv_cache_is_an_engine_lever_with_its_own_gate() -> None:
    from joulepath.optimize.levers import engine_config_for

    assert parse_lever("kv_int8") == Lever("kv_int8") and engine_config_for(Lever("kv_int8")).kv_int8
    (verdict,) = choose_lever(TINY, "kv_int8", gate_examples(1)[:8], use_cache=False)  # no opt-outs to try
    assert verdict.lever == "kv_int8" and verdict.examples == 8 and verdict.mean_kl != verdict.mean_kl  # NaN
