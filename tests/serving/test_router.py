"""Tiered processing: the router's correctness model and tuning, the cascade, and the engine's log-probs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from joulepath.engine import Engine, EngineConfig, SamplingParams
from joulepath.model import DenseCausalAttention, load_model
from joulepath.serving.router import (
    Cascade,
    CorrectnessModel,
    Router,
    best_knob,
    routed_outcome,
    tune_cascade,
    tune_router,
)


def two_kinds(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of two request kinds: the small tier answers kind 0 right, only the large tier kind 1."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 2, n)
    features = np.c_[kind + 0.1 * rng.standard_normal(n), rng.standard_normal(n)]
    return features, kind == 0, np.ones(n, bool)


def test_the_router_learns_which_requests_the_small_tier_answers() -> None:
    features, small_ok, large_ok = two_kinds()
    model = CorrectnessModel.fit(features, {"small": small_ok, "large": large_ok})
    router = tune_router(model, features, small_ok, large_ok, ("small", "large"), (1.0, 3.0), "threshold", 0.99)
    test_features, test_small_ok, _ = two_kinds(seed=1)
    routes = router.route(test_features)
    to_small = np.array([r.tier == "small" for r in routes])
    assert (to_small == test_small_ok).mean() > 0.97  # kind 0 to small, kind 1 to large
    assert all(r.reason for r in routes)
    cost_aware = tune_router(model, features, small_ok, large_ok, ("small", "large"), (1.0, 3.0), "cost_aware", 0.99)
    share, accuracy = routed_outcome(np.array([r.tier == "small" for r in cost_aware.route(test_features)]),
                                     test_small_ok, np.ones(len(test_small_ok), bool))  # fmt: skip
    assert accuracy >= 0.97 and 0.4 < share < 0.6
    with pytest.raises(ValueError, match="policy"):
        Router(model, ("small", "large"), (1.0, 3.0), "random", 0.5)


def test_tuning_takes_the_most_small_traffic_that_keeps_the_target() -> None:
    outcomes = [(0.9, 0.80), (0.7, 0.95), (0.6, 0.99), (0.2, 1.0)]
    assert best_knob([1, 2, 3, 4], outcomes, goal=0.95) == 2
    assert best_knob([1, 2, 3, 4], outcomes, goal=1.01) == 4  # none clears: the most accurate
    confident = np.array([-0.01, -0.02, -2.0, -3.0, -0.05])
    small_ok = np.array([True, True, False, False, True])
    cascade = tune_cascade(confident, small_ok, np.ones(5, bool), target=1.0)
    escalated = [cascade.escalate(float(c) * 4, 4) for c in confident]
    assert escalated == [False, False, True, True, False]
    assert Cascade(-0.5).escalate(-3.0, 2) and not Cascade(-0.5).escalate(-0.2, 2)


def test_the_engine_records_the_log_probability_of_what_it_emitted() -> None:
    loaded = load_model("dummy:tiny-llama")
    params = SamplingParams(max_tokens=6, ignore_eos=True)
    prompt = [5, 6, 7, 8]
    tracked = Engine(loaded, EngineConfig(track_logprobs=True)).generate([prompt], params)[0]
    plain = Engine(loaded).generate([prompt], params)[0]
    assert plain.record.logprob_sum == 0.0 and tracked.output_ids == plain.output_ids
    ids = torch.tensor(prompt + tracked.output_ids)
    with torch.no_grad():
        logits = loaded.model(ids, torch.arange(len(ids)), DenseCausalAttention([len(ids)]))  # (T, vocab)
    rows = torch.log_softmax(logits[len(prompt) - 1 : -1].float(), -1)  # the rows that predicted each output
    expected = rows[torch.arange(6), torch.tensor(tracked.output_ids)]
    assert tracked.record.logprob_sum == pytest.approx(float(expected.sum()), abs=1e-3)
    assert tracked.record.logprob_min == pytest.approx(float(expected.min()), abs=1e-3)


def test_a_frontend_with_a_router_serves_each_request_on_the_tier_it_picks() -> None:
    from joulepath.serving.frontend import Frontend, Request, Tiers

    loaded = load_model("dummy:tiny-llama")
    features = np.zeros((4, 385))
    never_small = CorrectnessModel.fit(features, {"small": np.zeros(4, bool), "large": np.ones(4, bool)})
    router = Router(never_small, ("small", "large"), (1.0, 3.0), "threshold", 0.5)
    frontend = Frontend(Engine(loaded), tiers=Tiers("small", (("large", Engine(loaded)),), router))
    rid = frontend.submit(Request("hello there", SamplingParams(max_tokens=3, ignore_eos=True)))
    done = []
    while frontend.has_work():
        done += frontend.step()
    assert done[0].request_id == rid and done[0].tier == "large" and "threshold" in done[0].route
    with pytest.raises(ValueError, match="router's tiers"):
        Tiers("small", (("xl", Engine(loaded)),), router)
