"""Dynamic activation sparsity (TEAL) as module swaps applied after a model loads.

A decode step at batch 1 streams every weight once; TEAL (Liu et al. 2024, "Training-Free Activation
Sparsity in Large Language Models", arXiv:2408.14690) observes that the hidden states entering each
projection are zero-mean and heavy-tailed, so zeroing the entries of smallest magnitude changes little,
and an input entry that is zero needs no weight row: with weights stored (in, out) a GEMV over the
active inputs reads only their rows, contiguous in memory.

- `calibrate` runs the dense model (`DenseCausalAttention`, no cache) over calibration prompts, samples
  |x| at the input of each chosen projection and takes per-module thresholds at the `target` quantile
  (TEAL's uniform allocation; its greedy per-layer allocation is not done here), then measures exactly
  which fraction of the calibration entries falls below them in a second pass.
- `sparsify_model` swaps those `Linear`s for `SparseLinear` (same weight tensor, no copy). Its forward
  zeroes |x| < threshold; when few entries stay active (batch-1 decode) it sums the active weight rows
  with `F.embedding_bag(mode="sum", per_sample_weights=x_active)`, which reads only those rows; otherwise
  it runs the dense matmul on the thresholded input (identical result, float rounding aside).
- `measured_sparsity` reads the zeroed-input counters every `SparseLinear` keeps (the fleet projection's
  "activation sparsity").

Gather route, measured per projection on this project's 2-core AMD EPYC VM (fp32, 1 thread, median of 5,
weights cycled through 10 copies so they come from DRAM as in a decode step, ms):

    shape (K x N)   dense   gather 25 %  50 %   70 %   (embedding_bag; % = sparsity)
    896 x 9728      1.44    1.95         1.29   0.77
    4864 x 896      1.03    1.31         0.74   0.39

`embedding_bag` streams DRAM at about half the rate of the dense GEMV (~13 vs ~24 GB/s), so gathering
pays only above ~45 % sparsity. `x[:, idx] @ weight.index_select(0, idx)` (and `weight[idx]`) copies the
active rows first and measured 2-8x *slower* than dense; `torch.sparse.mm` with a COO x was within
+-30 % of `embedding_bag`. Per-token gathering (one bag per token) grows with T x active entries while a
dense GEMM barely grows with T (T = 8 at 50 %: 4.3 vs 4.2 ms, T = 32: always slower); the union of active
inputs over tokens measured slower than dense at every T. Hence: gather while the active entries number
at most `GATHER_MAX_ACTIVE_ROWS` (0.6) rows of x, else the dense matmul of the thresholded input. Each
call also pays ~35 us of thresholding, `nonzero` and indexing, which small models feel.

Whole model, batch-1 decode steps through the engine (32-token prompt, 16 timed steps per run, dense and
each target interleaved on one model by swapping modules, 1 thread, median [min-max] of 5 runs (qwen: 3),
speedup = dense / sparse per run; sites wqkv, wo, w13, w2):

    model                 dense ms   target 0.25         0.5                 0.7
    jp-large (25M)        8.38       0.87x [0.87-0.90]   1.06x [1.04-1.06]   1.45x [1.42-1.45]
    dummy:qwen2.5-0.5b    102.8      0.92x [0.83-0.97]   1.05x [0.89-1.08]   1.53x [1.49-1.70]

jp-large in a second session: 0.3 0.87x [0.85-0.91], 0.4 0.91x [0.88-0.97], 0.5 1.06x [0.98-1.18]
(spread includes 1.0), 0.7 1.45x [1.42-1.61]. At 2 threads this VM's multi-threaded ops stall ~8 ms per
parallel region while other jobs share the cores (jp-large dense ~186 ms/step, sparse the same within
noise), so those runs say nothing about sparsity.

Quality, jp-large, thresholds from golden *dev* prompts (per_cell 4 / 8), gate on the golden *test* split
(`evaluate`, `EngineConfig()`, max_tokens 24, `gate(max_drop_points=1.0)`):

    test examples   dense    0.25            0.3             0.4             0.5             0.7
    96              63.5 %   63.5 % PASS     -               64.6 % PASS     59.4 % FAIL     26.0 % FAIL
    192             63.5 %   -               62.5 % FAIL     62.5 % FAIL     57.3 % FAIL     -

One example is 1.04 points at 96 and 0.52 at 192, so the 1-point gate allows no net loss at 96 and one
lost example at 192: 0.25-0.4 move by 1-2 examples (noise at this size), 0.5 loses 4-6 points, 0.7
collapses. Where sparsity pays (>= ~0.5 at batch 1) it fails the gate on this 25M model; where it passes
it is a slowdown. Run-time sparsity on test decoding exceeds the target at high targets (0.767 at 0.7):
decode-time inputs are smaller than the prompt tokens calibrated on. Calibrating on dev prompts plus
their answers (96 test examples) gave 0.4: 63.5 % PASS, 0.5: 59.4 % FAIL: the same verdicts.

References: TEAL (Liu et al. 2024, arXiv:2408.14690, github.com/FasterDecoding/TEAL); Deja Vu (Liu et
al. 2023) for the batch-1 weight-row skipping argument; CATS (Lee et al. 2024) for thresholded SwiGLU.

    >>> from joulepath.model import load_model
    >>> loaded = load_model("dummy:tiny-llama")
    >>> thresholds = calibrate(loaded, ["hello world", "the quick brown fox"], target_sparsity=0.5)
    >>> sparsify_model(loaded.model, thresholds).swapped[:2]
    ('layers.0.attention.wqkv', 'layers.0.attention.wo')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from joulepath.model import DenseCausalAttention, LoadedModel
from joulepath.model.transformer import Linear, Transformer

Site = Literal["wqkv", "wo", "w13", "w2"]
SITES: tuple[Site, ...] = get_args(Site)  # projection inputs TEAL sparsifies: every one but the LM head
GATHER_MAX_TOKENS = 16  # above this many tokens a step never gathers (skips the nonzero scan in prefill)
GATHER_MAX_ACTIVE_ROWS = 0.6  # gather while active entries <= this many rows of x (measured crossover, see above)
_SAMPLES_PER_CALL = 1 << 16  # |x| entries kept per module per calibration forward (quantile estimate)
_PROMPTS_PER_BATCH = 8


@dataclass(frozen=True)
class SparsityThresholds:
    """Per-module magnitude thresholds from `calibrate`: inputs with |x| < threshold are zeroed."""

    target: float  # fraction of input entries meant to fall below the threshold
    sites: tuple[Site, ...]
    thresholds: dict[str, float]  # qualified module name (e.g. "layers.0.feed_forward.w2") -> |x| threshold
    calibration_sparsity: dict[str, float]  # measured fraction below threshold on the calibration prompts
    calibration_tokens: int
    in_features: dict[str, int]  # module name -> input width (the weights of `measured`)

    @property
    def measured(self) -> float:
        """Calibration sparsity averaged over modules, weighted by in_features."""
        total = sum(self.in_features.values())
        return sum(self.calibration_sparsity[n] * k for n, k in self.in_features.items()) / total


@dataclass(frozen=True)
class SparsitySummary:
    """What `sparsify_model` did."""

    target: float
    sites: tuple[Site, ...]
    swapped: tuple[str, ...]  # qualified module names now SparseLinear
    # Fraction of all projection weight bytes (LM head included) a batch-1 decode step reads if each
    # swapped module sees exactly `target` sparsity: an estimate, not a measurement.
    expected_weight_read_fraction: float


class SparseLinear(nn.Module):
    """A `Linear` whose inputs with |x| < threshold are zeroed; at small T only active weight rows are read.

    Shares the original's weight (in_features, out_features) and bias. Counts the input entries it saw and
    zeroed (`tokens_seen`, `zeros_seen`) for `measured_sparsity`."""

    def __init__(self, linear: Linear, threshold: float) -> None:
        super().__init__()
        self.weight = linear.weight  # the same Parameter: no copy
        self.bias = linear.bias
        self.in_features, self.out_features = linear.weight.shape
        self.threshold = float(threshold)
        self.tokens_seen = 0
        self.zeros_seen = 0
        self._offset0: Tensor
        self.register_buffer("_offset0", torch.zeros(1, dtype=torch.int64, device=self.weight.device), False)

    def forward(self, x: Tensor) -> Tensor:
        x2 = x.reshape(-1, self.in_features)  # (T, K)
        keep = x2.abs() >= self.threshold  # (T, K)
        t = x2.shape[0]
        y = None
        gather_max = GATHER_MAX_ACTIVE_ROWS * self.in_features
        if t == 1:  # batch-1 decode: the hot path, one bag and no per-token offsets to compute
            idx = keep.view(-1).nonzero().view(-1)  # (nnz,) active inputs: a host sync on GPU
            n_active = idx.numel()
            if n_active <= gather_max:
                y = F.embedding_bag(idx, self.weight, self._offset0, mode="sum", per_sample_weights=x2.view(-1)[idx])
        elif t <= GATHER_MAX_TOKENS:
            active = keep.nonzero()  # (nnz, 2) rows (token, input): a host sync on GPU
            n_active = active.shape[0]
            if n_active <= gather_max:
                y = gather_rows_matmul(x2, active, self.weight)  # (T, N)
        else:
            n_active = int(keep.sum())  # a host sync on GPU
        if y is None:
            y = torch.where(keep, x2, 0) @ self.weight  # (T, N)
        self.tokens_seen += t
        self.zeros_seen += t * self.in_features - n_active
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features)

    @property
    def sparsity(self) -> float:
        """Fraction of the input entries seen so far that were zeroed (NaN before any token)."""
        return self.zeros_seen / (self.tokens_seen * self.in_features) if self.tokens_seen else math.nan

    def reset_counters(self) -> None:
        self.tokens_seen = self.zeros_seen = 0

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, threshold={self.threshold:.4g}"


def gather_rows_matmul(x2: Tensor, active: Tensor, weight: Tensor) -> Tensor:
    """Sum over each token's active inputs i of x[t, i] * weight[i, :], reading only those weight rows.

    x2: (T, K); active: (nnz, 2) (token, input) pairs sorted by token, as `nonzero` gives; weight: (K, N).
    `embedding_bag` sums weighted rows per bag without gathering a copy of them first."""
    tokens, inputs = active[:, 0], active[:, 1]  # (nnz,), (nnz,)
    counts = torch.bincount(tokens, minlength=x2.shape[0])  # (T,) active entries per token
    offsets = counts.cumsum(0) - counts  # (T,) where each token's bag starts
    return F.embedding_bag(inputs, weight, offsets, mode="sum", per_sample_weights=x2[tokens, inputs])  # (T, N)


def _site_modules(model: Transformer, sites: Collection[str]) -> dict[str, Linear]:
    unknown = [s for s in sites if s not in SITES]
    if unknown or not sites:
        raise ValueError(f"unknown sparsity sites {unknown or list(sites)}; known: {', '.join(SITES)}")
    return {n: m for n, m in model.named_modules() if isinstance(m, Linear) and n.rpartition(".")[2] in sites}


def _check_target(target: float) -> None:
    if not 0.0 < target < 1.0:
        raise ValueError(f"target_sparsity must be in (0, 1), got {target}")


def _prompt_ids(loaded: LoadedModel, prompts: list[str]) -> list[list[int]]:
    ids = [loaded.tokenizer.encode(p) for p in prompts]
    ids = [i[: loaded.config.max_position] for i in ids if i]
    if not ids:
        raise ValueError("calibration needs at least one non-empty prompt")
    return ids


@torch.no_grad()
def _run_with_hooks(loaded: LoadedModel, ids: list[list[int]], modules: dict[str, Linear], hook: Callable) -> None:
    """Run the dense model over the prompts in batches, calling hook(name, x (T, K)) on each module's input."""
    model = loaded.model
    device = next(model.parameters()).device
    handles = [
        m.register_forward_pre_hook(lambda _m, args, name=name: hook(name, args[0].reshape(-1, args[0].shape[-1])))
        for name, m in modules.items()
    ]
    try:
        for b in range(0, len(ids), _PROMPTS_PER_BATCH):
            batch = ids[b : b + _PROMPTS_PER_BATCH]
            tokens = torch.tensor([t for seq in batch for t in seq], device=device)  # (T,)
            positions = torch.cat([torch.arange(len(seq)) for seq in batch]).to(device)  # (T,)
            last = torch.tensor([len(batch[0]) - 1], device=device)  # one logit row: skips most of the head
            model(tokens, positions, DenseCausalAttention([len(seq) for seq in batch]), logit_rows=last)
    finally:
        for h in handles:
            h.remove()


def calibrate(
    loaded: LoadedModel, prompts: list[str], target_sparsity: float, sites: Collection[Site] = SITES, seed: int = 0
) -> SparsityThresholds:
    """Per-module |x| thresholds at the `target_sparsity` quantile of each chosen projection's input.

    Pass 1 samples up to 65,536 |x| entries per module per forward and takes their quantile; pass 2
    counts, over every calibration entry, the fraction actually below it (`calibration_sparsity`).
    Raises ValueError for a target outside (0, 1), no non-empty prompt, or an unknown site."""
    _check_target(target_sparsity)
    modules = _site_modules(loaded.model, sites)
    ids = _prompt_ids(loaded, prompts)
    gen = torch.Generator().manual_seed(seed)
    samples: dict[str, list[Tensor]] = {n: [] for n in modules}

    def sample(name: str, x: Tensor) -> None:
        flat = x.detach().abs().float().flatten().cpu()
        if flat.numel() > _SAMPLES_PER_CALL:
            flat = flat[torch.randint(flat.numel(), (_SAMPLES_PER_CALL,), generator=gen)]
        samples[name].append(flat)

    _run_with_hooks(loaded, ids, modules, sample)
    thresholds = {n: _quantile(torch.cat(s), target_sparsity) for n, s in samples.items()}
    below = dict.fromkeys(modules, 0)

    def count(name: str, x: Tensor) -> None:
        below[name] += int((x.abs() < thresholds[name]).sum())

    _run_with_hooks(loaded, ids, modules, count)
    n_tokens = sum(len(i) for i in ids)
    in_features = {n: m.weight.shape[0] for n, m in modules.items()}
    measured = {n: below[n] / (n_tokens * in_features[n]) for n in modules}
    return SparsityThresholds(target_sparsity, tuple(sites), thresholds, measured, n_tokens, in_features)


def _quantile(values: Tensor, q: float) -> float:
    """The smallest v with a fraction >= q of `values` at or below it (torch.quantile caps its input size)."""
    k = min(max(math.ceil(q * values.numel()), 1), values.numel())
    return float(values.kthvalue(k).values)


def sparsify_model(
    model: Transformer, thresholds: SparsityThresholds, sites: Collection[Site] | None = None
) -> SparsitySummary:
    """Swap each calibrated `Linear` of `model` (of `sites`, default the calibrated ones) for a SparseLinear
    sharing its weight, in place. Raises ValueError for an unknown or uncalibrated site, or thresholds
    calibrated on a model whose module names or widths differ."""
    sites = tuple(thresholds.sites if sites is None else sites)
    missing = [s for s in sites if s not in thresholds.sites and s in SITES]
    if missing:
        raise ValueError(f"sites {missing} were not calibrated; calibrated: {', '.join(thresholds.sites)}")
    modules = _site_modules(model, sites)
    names = [n for n in thresholds.thresholds if n.rpartition(".")[2] in sites]
    mismatched = [n for n in names if n not in modules or modules[n].weight.shape[0] != thresholds.in_features[n]]
    if mismatched or len(names) != len(modules):
        raise ValueError(f"thresholds do not fit this model (e.g. {(mismatched or list(modules))[:3]}); recalibrate")
    for name in names:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, SparseLinear(modules[name], thresholds.thresholds[name]))
    return SparsitySummary(thresholds.target, sites, tuple(names), _read_fraction(model, thresholds.target))


def _read_fraction(model: Transformer, target: float) -> float:
    """Weight bytes a batch-1 decode step reads at `target` sparsity, as a fraction of the dense step's."""
    full = sparse = 0
    for m in model.modules():
        if isinstance(m, Linear | SparseLinear):
            n = m.weight.numel() * m.weight.element_size()
            full += n
            sparse += n if isinstance(m, Linear) else round(n * (1 - target))
    return sparse / full if full else 1.0


def sparse_modules(model: nn.Module) -> list[SparseLinear]:
    """Every SparseLinear of `model`, in module order."""
    return [m for m in model.modules() if isinstance(m, SparseLinear)]


def measured_sparsity(model: nn.Module) -> float:
    """Fraction of projection inputs zeroed so far, averaged over SparseLinear modules weighted by
    in_features (prefill and decode tokens alike). Raises ValueError if none has seen a token."""
    seen = [m for m in sparse_modules(model) if m.tokens_seen]
    if not seen:
        raise ValueError("no SparseLinear has seen a token: sparsify the model and run it first")
    return sum(m.sparsity * m.in_features for m in seen) / sum(m.in_features for m in seen)


def reset_counters(model: nn.Module) -> None:
    """Zero every SparseLinear's token and zero counters (e.g. after calibration-like warm-up)."""
    for m in sparse_modules(model):
        m.reset_counters()
