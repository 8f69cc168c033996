"""The autotuner: every candidate measured, the best usable one chosen (never an ungated lever), cached."""

import dataclasses

import torch

from joulepath.optimize import tune as tuning
from joulepath.optimize.tune import Candidate, Measured


def test_tune_measures_candidates_and_picks_the_fastest_usable_one() -> None:
    result = tuning.tune("dummy:tiny-llama", thread_counts=[1], compile_too=False, reps=2, tokens=4)
    names = {m.candidate.weights for m in result.measured}
    assert "fp32" in names and len(names) >= 2  # fp32 and at least one quantized path on this build
    assert all(m.tokens_per_s > 0 and m.low <= m.tokens_per_s <= m.high for m in result.measured if not m.error)
    ungated = [m for m in result.measured if m.gate == "ungated"]
    assert ungated and all(not m.eligible for m in ungated)  # no verdict cached: speed cannot choose them
    assert result.best.candidate.weights == "fp32"
    assert result.baseline.candidate == Candidate(torch.get_num_threads(), False, "fp32")
    path = tuning.store(result)
    assert path.is_file() and tuning.load_cached("dummy:tiny-llama") == result


def test_a_passed_gate_makes_a_lever_eligible_and_the_fastest_wins() -> None:
    fp32 = Measured(Candidate(1, False, "fp32"), 10.0, 9.0, 11.0, "n/a")
    fast = Measured(Candidate(1, False, "int8_dynamic"), 30.0, 29.0, 31.0, "passed")
    faster_refused = Measured(Candidate(1, False, "int4_weight_only"), 40.0, 39.0, 41.0, "refused")
    broken = Measured(Candidate(2, True, "fp32"), 0.0, 0.0, 0.0, "n/a", error="compile failed")
    result = tuning.TuneResult("m", "here", "now", 4, 1, 1, (fp32, fast, faster_refused, broken))
    assert result.best is fast and result.baseline is fp32
    assert dataclasses.replace(result, measured=(fp32, broken)).best is fp32
