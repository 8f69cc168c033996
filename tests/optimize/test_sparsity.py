"""TEAL activation sparsity: calibration hits its target, SparseLinear is the dense matmul of the thresholded
input on both routes, the model swap, run-time sparsity counters, and clear refusals."""

from __future__ import annotations

import pytest
import torch

from joulepath.engine import Engine, SamplingParams
from joulepath.model import LoadedModel, load_model
from joulepath.model.transformer import Linear
from joulepath.optimize.sparsity import (
    GATHER_MAX_ACTIVE_ROWS,
    SITES,
    SparseLinear,
    SparsityThresholds,
    calibrate,
    measured_sparsity,
    reset_counters,
    sparse_modules,
    sparsify_model,
)

from .conftest import random_linear

PROMPTS = [
    "hello world, this is a calibration prompt",
    "the quick brown fox jumps over the lazy dog",
    "1 + 2 = 3; 7 * 6 = 42; sort 5 3 9 1",
    "Question: what is the capital of France? Answer:",
]


def thresholded(x: torch.Tensor, threshold: float) -> torch.Tensor:
    return torch.where(x.abs() >= threshold, x, 0)


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return load_model("dummy:tiny-llama")


@pytest.mark.parametrize("target", [0.25, 0.5, 0.7])
def test_calibration_hits_target(tiny: LoadedModel, target: float) -> None:
    th = calibrate(tiny, PROMPTS, target)
    assert th.target == target and th.sites == SITES
    assert th.calibration_tokens == sum(len(tiny.tokenizer.encode(p)) for p in PROMPTS)
    assert set(th.thresholds) == {n for n, m in tiny.model.named_modules() if n.rpartition(".")[2] in SITES}
    for name, s in th.calibration_sparsity.items():
        assert abs(s - target) < 0.02, (name, s)  # the threshold is a quantile of the same inputs
    assert abs(th.measured - target) < 0.02


def test_higher_target_higher_thresholds(tiny: LoadedModel) -> None:
    lo, hi = calibrate(tiny, PROMPTS, 0.3), calibrate(tiny, PROMPTS, 0.7)
    assert all(hi.thresholds[n] > lo.thresholds[n] for n in lo.thresholds)


@pytest.mark.parametrize("rows", [1, 2, 40])  # gather route (1, 2 tokens at threshold 1.2), dense route (40)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.2])
def test_sparse_linear_is_dense_matmul_of_thresholded_input(rows: int, bias: bool, threshold: float) -> None:
    layer = random_linear(128, 48, bias)
    x = torch.randn(rows, 128, generator=torch.Generator().manual_seed(1))
    sparse = SparseLinear(layer, threshold)
    with torch.no_grad():
        y, ref = sparse(x), layer(thresholded(x, threshold))
    assert y.shape == (rows, 48)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    assert sparse.weight is layer.weight  # shared, not copied
    assert sparse.tokens_seen == rows
    assert sparse.zeros_seen == int((x.abs() < threshold).sum())


def test_threshold_zero_equals_original_linear() -> None:
    layer = random_linear(64, 32, bias=True)
    x = torch.randn(1, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(SparseLinear(layer, 0.0)(x), layer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("rows", "threshold", "gathers"),
    [(1, 1.2, True), (1, 0.0, False), (2, 1.2, True), (2, 0.0, False), (40, 1.2, False)],
)
def test_route_gathers_only_when_few_inputs_are_active(
    monkeypatch: pytest.MonkeyPatch, rows: int, threshold: float, gathers: bool
) -> None:
    """~23 % of N(0, 1) entries have |x| >= 1.2: few enough to gather rows at 1-2 tokens, never at 40."""
    calls: list[int] = []
    real = torch.nn.functional.embedding_bag
    monkeypatch.setattr(torch.nn.functional, "embedding_bag", lambda *a, **k: calls.append(1) or real(*a, **k))
    layer = SparseLinear(random_linear(128, 16, bias=False), threshold)
    with torch.no_grad():
        layer(torch.randn(rows, 128, generator=torch.Generator().manual_seed(3)))
    assert bool(calls) == gathers and GATHER_MAX_ACTIVE_ROWS < 1


def test_sparsify_model_swaps_sites_and_engine_generates() -> None:
    loaded = load_model("dummy:tiny-llama")
    w2_before = loaded.model.layers[0].feed_forward.w2.weight
    th = calibrate(loaded, PROMPTS, 0.5, sites=("w13", "w2"))
    summary = sparsify_model(loaded.model, th)
    n_layers = loaded.config.n_layers
    assert len(summary.swapped) == 2 * n_layers
    assert all(n.rpartition(".")[2] in ("w13", "w2") for n in summary.swapped)
    assert isinstance(loaded.model.layers[0].feed_forward.w2, SparseLinear)
    assert isinstance(loaded.model.layers[0].attention.wqkv, Linear)  # not a calibrated site
    assert loaded.model.layers[0].feed_forward.w2.weight is w2_before
    assert 0.0 < summary.expected_weight_read_fraction < 1.0
    out = Engine(loaded).generate(["hello"], SamplingParams(max_tokens=4, ignore_eos=True))
    assert len(out[0].output_ids) == 4
    assert 0.0 <= measured_sparsity(loaded.model) <= 1.0


def test_measured_sparsity_close_to_target_on_calibration_like_input() -> None:
    loaded = load_model("dummy:tiny-llama")
    th = calibrate(loaded, PROMPTS, 0.5)
    sparsify_model(loaded.model, th)
    reset_counters(loaded.model)
    Engine(loaded).generate(PROMPTS, SamplingParams(max_tokens=2, ignore_eos=True))  # prefill sees the same inputs
    assert abs(measured_sparsity(loaded.model) - 0.5) < 0.05
    reset_counters(loaded.model)
    assert all(m.tokens_seen == 0 for m in sparse_modules(loaded.model))


def test_bad_inputs_are_refused_clearly(tiny: LoadedModel) -> None:
    for target in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"target_sparsity must be in \(0, 1\)"):
            calibrate(tiny, PROMPTS, target)
    with pytest.raises(ValueError, match="at least one non-empty prompt"):
        calibrate(tiny, [], 0.5)
    with pytest.raises(ValueError, match="at least one non-empty prompt"):
        calibrate(tiny, [""], 0.5)
    with pytest.raises(ValueError, match=r"unknown sparsity sites.*'mlp'.*known: wqkv, wo, w13, w2"):
        calibrate(tiny, PROMPTS, 0.5, sites=("w2", "mlp"))  # type: ignore[arg-type]
    th = calibrate(tiny, PROMPTS, 0.5, sites=("w2",))
    with pytest.raises(ValueError, match="not calibrated"):
        sparsify_model(load_model("dummy:tiny-llama").model, th, sites=("wo",))
    with pytest.raises(ValueError, match="do not fit this model"):
        sparsify_model(load_model("dummy:tiny-mistral").model, th)  # d_ff 160, not 128
    with pytest.raises(ValueError, match="no SparseLinear has seen a token"):
        measured_sparsity(load_model("dummy:tiny-llama").model)


def test_thresholds_are_frozen(tiny: LoadedModel) -> None:
    th = calibrate(tiny, PROMPTS, 0.5)
    assert isinstance(th, SparsityThresholds)
    with pytest.raises(AttributeError):
        th.target = 0.9  # type: ignore[misc]
