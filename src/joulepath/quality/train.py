"""Training zoo models on the task suite with the engine's own model code.

Data is made ahead of time (`quality.shards`): examples packed into fixed-length rows with per-example
attention, positions and answer masks, moved to the training device once and read by index, so a
step does no Python work on data. AdamW (fused on CUDA), linear warm-up then cosine decay to a floor,
gradient clipping, bf16 autocast and FlexAttention on CUDA, `torch.compile` of the loss where asked,
loss on answer tokens only, optional multi-token (Medusa) heads trained on the detached trunk,
checkpoints with optimizer state so a run resumes where it stopped, and an optional wall-time budget
that sets the step count after the first timed steps.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from joulepath.model import (
    DocumentAttention,
    JsonTokenizer,
    LoadedModel,
    ModelConfig,
    Transformer,
    load_model,
    save_checkpoint,
)
from joulepath.model.checkpoint import init_weights
from joulepath.model.mtp import MedusaHeads, MTPConfig, load_heads, save_heads
from joulepath.quality import shards
from joulepath.quality.shards import ALL_SKILLS, DataMix, PackedRows
from joulepath.quality.tasks import CHAT_TEMPLATE, SKILLS
from joulepath.quality.tokenizer import corpus, train_tokenizer

ZOO: dict[str, dict[str, Any]] = {  # shapes of the built-in models (vocabulary set by the tokenizer)
    "jp-small": dict(d_model=256, n_layers=6, n_heads=4, n_kv_heads=2, d_ff=768),  # ~4.8 M parameters
    "jp-large": dict(d_model=512, n_layers=8, n_heads=8, n_kv_heads=4, d_ff=1536),  # ~25 M parameters
}


ONE_PASS_MAX_TOKENS = 500_000_000  # the most `data_rows = 0` makes ahead (~3.5 GB of row arrays)


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "jp-small"
    steps: int = 2000
    tokens_per_step: int = 4096  # rows of `seq_len` tokens per optimizer step = tokens_per_step // seq_len
    seq_len: int = 2048  # packed row length (the longest example, a hard lookup, is ~1,130 tokens)
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # Rows made ahead; 0: one pass, steps x rows per step (a time-budgeted run, or one past ONE_PASS_MAX_TOKENS,
    # must say). A run longer than its rows repeats them in new orders (a resumed run draws a new order), and a
    # small model learns repeated rows by heart: in the lookup probe (benchmarks/RESULTS.md) 512 rows seen 75
    # times reached the same training loss as 12,800 rows seen 3 times, yet answered 1 % of fresh 2-line
    # lookups right against 44 %.
    data_rows: int = 0
    data_workers: int = 1
    vocab_size: int = 512
    mtp_heads: int = 0  # Medusa heads trained alongside (0: none)
    checkpoint_every: int = 250
    time_budget_s: float = 0.0  # > 0: after `timing_steps`, set the step count to fit this wall time
    timing_steps: int = 30
    compile: bool = False  # torch.compile the loss (CUDA: pays after ~1 minute)
    seed: int = 0
    skills: tuple[str, ...] = SKILLS
    level_weights: tuple[float, float, float] = (0.2, 0.35, 0.45)
    safety_share: float = 0.02
    lookup_questions: int = 8  # questions (turns) per lookup document in the rows (shards.DataMix)
    lookup_lines: tuple[int, int] | None = None  # lookup documents' line counts (None: each level's)
    lookup_echo: float = 0.0  # share of lookup documents asked in the echo form (shards.DataMix)
    lookup_key_digits: tuple[int, int] | None = None  # lookup keys' digit counts (None: the golden sets' 4)
    init_from: str = ""  # a zoo model folder whose weights (and heads) start a fresh run: warm start
    log_every: int = 25

    def __post_init__(self) -> None:
        if self.preset not in ZOO:
            raise ValueError(f"unknown zoo preset {self.preset!r}; known: {', '.join(ZOO)}")
        if self.steps <= 0 or self.tokens_per_step <= 0 or self.seq_len <= 0 or self.lr <= 0:
            raise ValueError("steps, tokens_per_step, seq_len and lr must be positive")
        if self.data_rows < 0 or (self.data_rows == 0 and self.time_budget_s > 0):
            raise ValueError("data_rows: rows to make ahead, > 0 with a time budget (its steps are not known ahead)")
        if self.data_rows == 0 and self.rows_to_make * self.seq_len > ONE_PASS_MAX_TOKENS:
            raise ValueError(
                f"data_rows: one pass of this run is {self.rows_to_make * self.seq_len:,} tokens, more "
                f"than the {ONE_PASS_MAX_TOKENS:,} made ahead by default (all held in memory); give data_rows"
            )
        self.data_mix()  # the mix's own checks, before any data is made

    def data_mix(self, safety: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())) -> DataMix:
        """What the rows hold; `safety`: (forbidden requests, harmless requests)."""
        return DataMix(
            self.skills,
            self.level_weights,
            self.safety_share,
            safety[0],
            safety[1],
            self.lookup_questions,
            self.lookup_lines,
            self.lookup_echo,
            self.lookup_key_digits,
        )

    @property
    def rows_per_step(self) -> int:
        return max(1, self.tokens_per_step // self.seq_len)

    @property
    def rows_to_make(self) -> int:
        """`data_rows`, or one pass over the run when it is 0."""
        return self.data_rows or self.steps * self.rows_per_step


@dataclass(frozen=True)
class TrainState:
    step: int
    total_steps: int
    loss: float
    tokens_per_s: float  # packed tokens (real + padding) per second over the last logging interval
    skill_loss: dict[str, float]  # answer-token loss per skill at the last logging step
    head_accuracy: tuple[float, ...] = ()  # top-1 accuracy of each MTP head at the last logging step


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine from `lr` to `lr * min_lr_ratio` at `total` steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def build(cfg: TrainConfig, tokenizer: JsonTokenizer) -> LoadedModel:
    end_id = tokenizer.token_id("<|end|>")
    mc = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        tie_embeddings=True,
        max_position=2048,
        eos_token_ids=(end_id,) if end_id is not None else (),
        **ZOO[cfg.preset],
    )
    torch.manual_seed(cfg.seed)
    model = Transformer(mc)
    init_weights(model, std=0.02)
    return LoadedModel(model, mc, tokenizer, f"zoo:{cfg.preset}", {"eos_token_id": end_id}, CHAT_TEMPLATE)


@dataclass(frozen=True)
class StepLoss:
    """One step's losses and what the log needs (tensors: reading them syncs the device)."""

    loss: Tensor  # scalar: base loss + MTP heads' loss
    base_per_token: Tensor  # (T,) answer-token cross-entropy, 0 elsewhere
    head_correct: Tensor  # (K,) right top-1 guesses per head
    head_count: Tensor  # (K,) positions each head was scored on


def packed_loss(
    model: Transformer, heads: MedusaHeads | None, rows: dict[str, Tensor], use_flex: bool | None = None
) -> StepLoss:
    """Next-token cross-entropy on answer positions of packed rows; heads k=1..K learn token t+1+k on
    positions whose target and whose k-th next target are answer tokens of the same example."""
    tokens, segments, targets = rows["tokens"], rows["segments"], rows["targets"]  # (B, L) each
    n = tokens.shape[1]
    device = tokens.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        x = model.trunk(tokens.flatten(), rows["positions"].flatten(), DocumentAttention(segments, use_flex))
        h = model.norm(x)  # (T, d)
        logits = model.output(h)  # (T, V)
    mask = targets.flatten().float()
    per_token = F.cross_entropy(logits.float(), tokens.roll(-1, 1).flatten(), reduction="none") * mask
    loss = per_token.sum() / mask.sum().clamp(min=1)
    k_heads = heads.cfg.n_heads if heads is not None else 0
    correct, count = torch.zeros(k_heads, device=device), torch.zeros(k_heads, device=device)
    if heads is not None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            head_logits = heads.logits(model, h.detach()).float()  # (K, T, V)
        col = torch.arange(n, device=device)[None, :]
        for k in range(1, k_heads + 1):
            valid = targets & targets.roll(-k, 1) & (segments == segments.roll(-k, 1)) & (col < n - k - 1)
            want = tokens.roll(-(k + 1), 1).flatten()
            v = valid.flatten().float()
            ce = F.cross_entropy(head_logits[k - 1], want, reduction="none")
            loss = loss + 0.8 ** (k - 1) * (ce * v).sum() / v.sum().clamp(min=1)  # Medusa's decaying weights
            correct[k - 1] = ((head_logits[k - 1].argmax(-1) == want).float() * v).sum()
            count[k - 1] = v.sum()
    return StepLoss(loss, per_token, correct, count)


def skill_losses(rows: dict[str, Tensor], per_token: Tensor) -> dict[str, float]:
    """Mean answer-token loss per skill (one device sync; logging steps only)."""
    skills, targets = rows["skills"].flatten().long(), rows["targets"].flatten().float()
    idx = skills.clamp(min=0)
    sums = torch.zeros(len(ALL_SKILLS), device=per_token.device).index_add(0, idx, per_token.detach())
    counts = torch.zeros(len(ALL_SKILLS), device=per_token.device).index_add(0, idx, targets)
    return {s: float(sums[i] / counts[i]) for i, s in enumerate(ALL_SKILLS) if counts[i] > 0}


class RowSampler:
    """Rows on the training device, served in a fresh random order each pass (no host work per step)."""

    def __init__(self, data: PackedRows, device: torch.device, seed: int) -> None:
        self.data = {
            "tokens": torch.from_numpy(data.tokens).to(device),
            "segments": torch.from_numpy(data.segments).to(device),
            "positions": torch.from_numpy(data.positions).to(device),
            "targets": torch.from_numpy(data.targets).to(device),
            "skills": torch.from_numpy(data.skills).to(device),
        }
        self.n = data.n_rows
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.order = torch.randperm(self.n, device=device, generator=self.gen)
        self.at = 0

    def next(self, k: int) -> dict[str, Tensor]:
        if self.at + k > self.n:
            self.order = torch.randperm(self.n, device=self.order.device, generator=self.gen)
            self.at = 0
        pick = self.order[self.at : self.at + k]
        self.at += k
        rows = {name: t[pick] for name, t in self.data.items()}
        rows["tokens"] = rows["tokens"].long()
        return rows


def make_data(cfg: TrainConfig, tokenizer_path: Path, safety: tuple[tuple[str, ...], tuple[str, ...]]) -> PackedRows:
    return shards.build(tokenizer_path, cfg.data_mix(safety), cfg.rows_to_make, cfg.seq_len, cfg.seed, cfg.data_workers)


def _optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig, cuda: bool) -> torch.optim.AdamW:
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        fused=cuda,
    )


def train(
    cfg: TrainConfig,
    out_dir: Path,
    progress: Callable[[TrainState], None] = lambda _: None,
    safety: tuple[tuple[str, ...], tuple[str, ...]] = ((), ()),
    data: PackedRows | None = None,
    device: str | None = None,
) -> LoadedModel:
    """Train (or resume) a zoo model into `out_dir` (a Hugging Face folder plus `trainer_state.pt`).

    `safety`: (forbidden requests, harmless requests) mixed into the data with a refusal and an
    out-of-scope answer; `data`: rows made ahead (default: made here from the config)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tok_path = out_dir / "tokenizer.json"
    if not tok_path.is_file() and cfg.init_from and (Path(cfg.init_from) / "tokenizer.json").is_file():
        shutil.copy2(Path(cfg.init_from) / "tokenizer.json", tok_path)  # a warm start keeps its tokenizer
    if not tok_path.is_file():
        train_tokenizer(corpus(4000, cfg.seed), cfg.vocab_size).save(str(tok_path))
    tokenizer = JsonTokenizer(tok_path)
    loaded = build(cfg, tokenizer)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = loaded.model.to(dev)
    heads = MedusaHeads(MTPConfig(cfg.mtp_heads, loaded.config.d_model)).to(dev) if cfg.mtp_heads else None
    params = list(model.parameters()) + (list(heads.parameters()) if heads is not None else [])
    opt = _optimizer(params, cfg, dev.type == "cuda")
    step, total, seconds = _resume(out_dir, model, heads, opt, cfg)
    sampler = RowSampler(data if data is not None else make_data(cfg, tok_path, safety), dev, cfg.seed + step)
    loss_fns = _loss_paths(cfg, dev)
    model.train()
    started, window_t0, window_step = time.perf_counter(), time.perf_counter(), step
    budget = WallBudget(cfg, started, step)
    skill_loss: dict[str, float] = {}
    head_acc: tuple[float, ...] = ()
    while step < total:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, cfg)
        rows = sampler.next(cfg.rows_per_step)
        out = _step_loss(loss_fns, model, heads, rows)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        step += 1
        if cfg.time_budget_s > 0:
            total = budget.update(step, total, dev)
        if step % cfg.log_every == 0 or step == total:
            skill_loss = skill_losses(rows, out.base_per_token)
            head_acc = tuple((out.head_correct / out.head_count.clamp(min=1)).tolist())
            now = time.perf_counter()
            rate = (step - window_step) * cfg.rows_per_step * cfg.seq_len / max(now - window_t0, 1e-9)
            window_t0, window_step = now, step
            progress(TrainState(step, total, float(out.loss.detach()), rate, skill_loss, head_acc))
        if step % cfg.checkpoint_every == 0 or step == total:
            _checkpoint(out_dir, model, heads, opt, cfg, step, total, seconds + time.perf_counter() - started)
    model.eval()
    loaded.model = model.cpu()
    save_checkpoint(loaded, out_dir)
    if heads is not None:
        save_heads(heads.cpu(), out_dir)
    return loaded


LossFn = Callable[[Transformer, MedusaHeads | None, dict[str, Tensor]], StepLoss]


def _loss_paths(cfg: TrainConfig, dev: torch.device) -> list[tuple[str, LossFn]]:
    """Loss implementations, fastest first: compiled (if asked), eager, and on CUDA eager with a dense
    mask instead of FlexAttention. A path that fails (a compiler or kernel missing on this machine)
    is dropped for the next, with the reason printed; the maths is the same on every path."""
    paths: list[tuple[str, LossFn]] = []
    if cfg.compile:
        paths.append(("compiled", torch.compile(packed_loss)))
    paths.append(("eager", packed_loss))
    if dev.type == "cuda":
        paths.append(("eager-dense-mask", lambda m, h, r: packed_loss(m, h, r, use_flex=False)))
    return paths


def _step_loss(
    paths: list[tuple[str, LossFn]], model: Transformer, heads: MedusaHeads | None, rows: dict[str, Tensor]
) -> StepLoss:
    while True:
        name, fn = paths[0]
        try:
            return fn(model, heads, rows)
        except Exception as exc:
            if len(paths) == 1:
                raise
            print(f"train: the {name} loss path failed ({type(exc).__name__}: {exc}); using {paths[1][0]}")
            paths.pop(0)


class WallBudget:
    """Fits the step count to `time_budget_s` of wall time from this run's own step rate.

    The rate is timed between steps `timing_steps // 3` and `timing_steps` (so first-step compilation
    and warm-up never enter it: counting them once made a 4.5-minute budget stop after 1.8 minutes,
    and a warm compile cache on the next run overshot it 2x); the count is then set once so the cosine
    schedule ends on time. A run still going at 1.1x the budget (the machine slowed down) is ended
    there, with its weights saved as usual, rather than lose everything to an outer time limit."""

    def __init__(self, cfg: TrainConfig, started: float, first_step: int) -> None:
        self.cfg, self.started = cfg, started
        self.mark_step = first_step + max(1, cfg.timing_steps // 3)
        self.set_step = first_step + max(self.mark_step - first_step + 1, cfg.timing_steps)
        self.mark_t = 0.0

    def update(self, step: int, total: int, dev: torch.device) -> int:
        if step in (self.mark_step, self.set_step) and dev.type == "cuda":
            torch.cuda.synchronize()  # the step rate must count the device's work, not the host's queue
        now = time.perf_counter()
        if step == self.mark_step:
            self.mark_t = now
        elif step == self.set_step:
            per_step_s = (now - self.mark_t) / (self.set_step - self.mark_step)
            remaining_s = self.cfg.time_budget_s - (now - self.started)
            return max(step + 1, min(self.cfg.steps, step + int(remaining_s / per_step_s)))
        elif now - self.started > 1.1 * self.cfg.time_budget_s:
            return step  # over budget: stop here
        return total


def _checkpoint(
    out_dir: Path,
    model: Transformer,
    heads: MedusaHeads | None,
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    step: int,
    total: int,
    seconds: float,
) -> None:
    state = {
        "model": model.state_dict(),
        "heads": heads.state_dict() if heads is not None else None,
        "optimizer": opt.state_dict(),
        "step": step,
        "total_steps": total,
        "config": asdict(cfg),
        "seconds": seconds,  # training wall time over resumes
    }
    torch.save(state, out_dir / "trainer_state.pt")


def _warm_start(folder: Path, model: Transformer, heads: MedusaHeads | None) -> None:
    """Copy a trained folder's weights (and Medusa heads, when both have them) into a fresh model."""
    device = next(model.parameters()).device
    try:
        start = load_model(str(folder))
    except Exception as exc:
        raise ValueError(f"init_from {folder}: not a loadable model folder ({exc})") from exc
    try:
        model.load_state_dict(start.model.state_dict())
    except RuntimeError as exc:
        raise ValueError(f"init_from {folder}: its weights do not fit the preset's shape ({exc})") from exc
    trained = load_heads(folder, device)
    if heads is not None and trained is not None and trained.cfg == heads.cfg:
        heads.load_state_dict(trained.state_dict())


def _resume(
    out_dir: Path, model: Transformer, heads: MedusaHeads | None, opt: torch.optim.Optimizer, cfg: TrainConfig
) -> tuple[int, int, float]:
    """(step, total steps, seconds so far) from a checkpoint in `out_dir`, or a fresh start (from
    `cfg.init_from`'s weights when set: the optimizer and schedule start afresh)."""
    path = out_dir / "trainer_state.pt"
    if not path.is_file():
        if cfg.init_from:
            _warm_start(Path(cfg.init_from), model, heads)
        return 0, cfg.steps, 0.0
    saved = torch.load(path, weights_only=False, map_location=next(model.parameters()).device)
    model.load_state_dict(saved["model"])
    if heads is not None and saved.get("heads") is not None:
        heads.load_state_dict(saved["heads"])
    opt.load_state_dict(saved["optimizer"])
    total = int(saved.get("total_steps", cfg.steps)) if cfg.time_budget_s > 0 else cfg.steps  # budget: as it was set
    return int(saved["step"]), total, float(saved.get("seconds", 0.0))
