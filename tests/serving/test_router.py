"""Tiered processing: the router's correctness model and tuning, the cascade, and the engine's log-probs."""

from __future__ import annotations

from pathlib import Path

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
    load_router,
    request_features,
    routed_outcome,
    save_router,
    shipped_router,
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
    router = tune_router(features, small_ok, large_ok, ("small", "large"), (1.0, 3.0), "threshold", 0.99)
    test_features, test_small_ok, _ = two_kinds(seed=1)
    routes = router.route(test_features)
    to_small = np.array([r.tier == "small" for r in routes])
    assert (to_small == test_small_ok).mean() > 0.97  # kind 0 to small, kind 1 to large
    assert all(r.reason for r in routes)
    cost_aware = tune_router(features, small_ok, large_ok, ("small", "large"), (1.0, 3.0), "cost_aware", 0.99)
    share, accuracy = routed_outcome(np.array([r.tier == "small" for r in cost_aware.route(test_features)]),
                                     test_small_ok, np.ones(len(test_small_ok), bool))  # fmt: skip
    assert accuracy >= 0.97 and 0.4 < share < 0.6
    with pytest.raises(ValueError, match="policy"):
        Router(router.model, ("small", "large"), (1.0, 3.0), "random", 0.5)
    with pytest.raises(ValueError, match="features"):
        Router(router.model, ("small", "large"), (1.0, 3.0), "threshold", 0.5, "bag-of-words")


def test_knobs_are_tuned_out_of_fold_so_noise_does_not_pass_for_skill() -> None:
    """With features that carry nothing, an in-sample fit would look confident on the fitting split; the
    out-of-fold predictions do not, so the tuned router keeps the accuracy by sending traffic large."""
    rng = np.random.default_rng(3)
    noise = rng.standard_normal((300, 60))
    small_ok = rng.random(300) < 0.5
    router = tune_router(noise, small_ok, np.ones(300, bool), ("small", "large"), (1.0, 3.0), "threshold", 0.99, c=10.0)
    test_small = rng.random(300) < 0.5
    to_small = np.array([r.tier == "small" for r in router.route(rng.standard_normal((300, 60)))])
    share, accuracy = routed_outcome(to_small, test_small, np.ones(300, bool))
    assert share < 0.15 and accuracy > 0.92


def test_ngram_features_are_stateless_and_see_the_task() -> None:
    texts = ["What is 12 + 7?", "What is 12 + 7?", "Name the capital of the document's country."]
    a, b = request_features(texts, [10, 10, 30]), request_features(texts[::-1], [30, 10, 10])
    assert a.shape == (3, 2 * 4096 + 3) and np.array_equal(a[0], a[1]) and np.array_equal(a[0], b[2])
    assert a[0, -3] > 0 and a[2, -3] == 0  # digits counted
    with pytest.raises(ValueError, match="features"):
        request_features(texts, [1, 2, 3], "tf-idf")


def wide(features: np.ndarray) -> np.ndarray:
    """Features padded with zeros to the n-gram router's width (what a saved ngrams router must read)."""
    from joulepath.serving.router import feature_width

    return np.hstack([features, np.zeros((len(features), feature_width("ngrams") - features.shape[1]))])


def test_a_router_survives_saving_and_a_broken_file_says_how_to_refit(tmp_path: Path) -> None:
    features, small_ok, large_ok = two_kinds()
    features = wide(features)
    router = tune_router(features, small_ok, large_ok, ("small", "large"), (1.0, 3.0), "cost_aware", 0.99)
    save_router(router, tmp_path / "r.npz", {"target": 0.99})
    back, prov = load_router(tmp_path / "r.npz")
    assert prov == {"target": 0.99} and back.knob == router.knob and back.policy == "cost_aware"
    assert [r.tier for r in back.route(features)] == [r.tier for r in router.route(features)]
    good = (tmp_path / "r.npz").read_bytes()
    narrow = CorrectnessModel(router.model.tiers, router.model.weights[:, :1], router.model.bias, 1.0)
    save_router(Router(narrow, router.tiers, (1.0, 3.0), "threshold", 0.5), tmp_path / "narrow.npz", {})
    for name, data in (("bad", b"not a zip"), ("empty", b""), ("cut", good[: len(good) // 2])):
        (tmp_path / f"{name}.npz").write_bytes(data)
    for name in ("bad", "empty", "cut", "narrow"):  # every broken file: one ValueError saying how to refit
        with pytest.raises(ValueError, match="--write-router"):
            load_router(tmp_path / f"{name}.npz")


def test_the_shipped_router_matches_the_shipped_models_passed_its_gate_and_routes() -> None:
    from joulepath.quality import golden

    router, _, why = shipped_router("jp-small", "jp-large", golden.SERVED_PER_CELL)
    assert router is not None, why
    assert router.tiers == ("jp-small", "jp-large") and router.features == "ngrams"
    assert router.route_requests(["What is 2 + 2?"], [12])[0].tier in router.tiers
    from joulepath.bench.routing import FIT_SKIP

    assert FIT_SKIP >= golden.SERVED_PER_CELL  # fitted only on golden dev examples the main job never serves


def test_a_shipped_router_is_refused_when_stale_ungated_or_fitted_on_served_examples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import joulepath.serving.router as r

    features, small_ok, large_ok = two_kinds()
    router = tune_router(wide(features), small_ok, large_ok, ("small", "large"), (1.0, 3.0), "cost_aware", 0.99)
    monkeypatch.setattr(r, "ROUTER_DIR", tmp_path)
    good = {"weights_small": "small", "weights_large": "large", "fit_skip_per_cell": 20, "test_accuracy_ratio": 0.995,
            "target": 0.99}  # fmt: skip
    cases = {
        "fitted on another large": good | {"weights_large": "old"},
        "below its 99% gate": good | {"test_accuracy_ratio": 0.97},
        "examples the main job serves": good | {"fit_skip_per_cell": 0},
    }
    for why, prov in cases.items():
        r.save_router(router, r.router_path("small", "large"), prov)
        got, _, reason = r.shipped_router("small", "large", 20)
        assert got is None and why in reason
    r.save_router(router, r.router_path("small", "large"), good)
    assert r.shipped_router("small", "large", 20)[0] is not None
    assert r.shipped_router("small", "xl", 20)[0] is None  # nothing fitted for that pair


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
    features = request_features(["a", "b", "c", "d"], [1, 2, 3, 4])
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


def test_the_fitting_split_holds_no_served_or_test_request_and_is_reproducible() -> None:
    from collections import Counter

    from joulepath.bench.routing import FIT_SKIP, fitting_split, fitting_traffic
    from joulepath.quality import golden
    from joulepath.quality.tasks import LEVELS, SKILLS

    judged = {e.user_text for e in golden.load("test")} | {e.user_text for e in golden.load("dev", per_cell=FIT_SKIP)}
    golden_half = golden.load("dev", skip_per_cell=FIT_SKIP)
    assert judged & {e.user_text for e in golden_half}  # the golden dev half has twins of judged requests ...
    fitted = fitting_split(40 - FIT_SKIP, 5)
    assert not judged & {e.user_text for e in fitted}  # ... which the fitting split leaves out
    traffic = fitting_traffic(5)
    every_golden = {e.user_text for split in golden.SEEDS for e in golden.load(split)}
    assert not every_golden & {e.user_text for e in traffic}  # generated traffic holds no golden text at all
    assert len({e.user_text for e in traffic}) == len(traffic)  # no request twice
    cells = Counter((e.skill, e.level) for e in traffic)
    assert set(cells) == {(s, lv) for s in SKILLS for lv in LEVELS} and max(cells.values()) == 5
    assert [e.user_text for e in fitting_traffic(5)] == [e.user_text for e in traffic]
