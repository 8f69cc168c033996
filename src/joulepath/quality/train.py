"""Training zoo models on the task suite with the engine's own model code.

AdamW, linear warm-up then cosine decay, gradient clipping, loss on answer tokens only, a curriculum
by difficulty (easy, then easy+medium, then all), checkpoints with optimizer state so a run resumes
where it stopped, and a progress bar with loss and tokens/s.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from joulepath.model import DenseCausalAttention, JsonTokenizer, LoadedModel, ModelConfig, Transformer, save_checkpoint
from joulepath.model.checkpoint import init_weights
from joulepath.quality.tasks import CHAT_TEMPLATE, LEVELS, SKILLS, chat_prompt, chat_target, generate
from joulepath.quality.tokenizer import corpus, train_tokenizer

ZOO: dict[str, dict[str, Any]] = {  # shapes of the built-in models (vocabulary set by the tokenizer)
    "jp-small": dict(d_model=192, n_layers=4, n_heads=6, n_kv_heads=2, d_ff=576),  # ~1.8 M parameters
    "jp-large": dict(d_model=384, n_layers=8, n_heads=8, n_kv_heads=4, d_ff=1152),  # ~14 M parameters
}


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "jp-small"
    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    max_len: int = 1280  # tokens; longer examples are skipped
    vocab_size: int = 512
    checkpoint_every: int = 250
    seed: int = 0
    skills: tuple[str, ...] = SKILLS


@dataclass(frozen=True)
class TrainState:
    step: int
    loss: float
    tokens_per_s: float


def levels_at(step: int, total: int) -> tuple[str, ...]:
    """Curriculum: easy for the first 20 % of steps, + medium to 50 %, then everything."""
    frac = step / max(total, 1)
    return LEVELS[:1] if frac < 0.2 else LEVELS[:2] if frac < 0.5 else LEVELS


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _batch(rng: random.Random, tok: JsonTokenizer, cfg: TrainConfig, step: int) -> tuple[list[list[int]], list[int]]:
    """Token ids per example and the index where each answer starts."""
    seqs: list[list[int]] = []
    starts: list[int] = []
    levels = levels_at(step, cfg.steps)
    while len(seqs) < cfg.batch_size:
        ex = generate(rng.choice(cfg.skills), rng.choice(levels), rng)
        prompt, target = tok.encode(chat_prompt(ex)), tok.encode(chat_target(ex))
        if len(prompt) + len(target) <= cfg.max_len:
            seqs.append(prompt + target)
            starts.append(len(prompt))
    return seqs, starts


def loss_on_answers(model: Transformer, seqs: list[list[int]], starts: list[int]) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over answer tokens; returns (loss, tokens processed)."""
    device = next(model.parameters()).device
    tokens = torch.tensor([t for s in seqs for t in s], device=device)
    positions = torch.cat([torch.arange(len(s)) for s in seqs]).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits = model(tokens, positions, DenseCausalAttention([len(s) for s in seqs]))  # (T, vocab)
    rows: list[int] = []
    targets: list[int] = []
    offset = 0
    for s, start in zip(seqs, starts, strict=True):
        rows.extend(range(offset + start - 1, offset + len(s) - 1))  # position i predicts token i + 1
        targets.extend(s[start:])
        offset += len(s)
    rows_t, targets_t = torch.tensor(rows, device=device), torch.tensor(targets, device=device)
    return F.cross_entropy(logits[rows_t].float(), targets_t), len(tokens)


def build(cfg: TrainConfig, tokenizer: JsonTokenizer) -> LoadedModel:
    if cfg.preset not in ZOO:
        raise ValueError(f"unknown zoo preset {cfg.preset!r}; known: {', '.join(ZOO)}")
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


def train(cfg: TrainConfig, out_dir: Path, progress: Callable[[TrainState], None] = lambda _: None) -> LoadedModel:
    """Train (or resume) a zoo model into `out_dir` (a Hugging Face folder plus `trainer_state.pt`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / "trainer_state.pt"
    tok_path = out_dir / "tokenizer.json"
    if not tok_path.is_file():
        train_tokenizer(corpus(4000, cfg.seed), cfg.vocab_size).save(str(tok_path))
    tokenizer = JsonTokenizer(tok_path)
    loaded = build(cfg, tokenizer)
    model = loaded.model.to("cuda" if torch.cuda.is_available() else "cpu")  # bf16 autocast on CUDA
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    step = 0
    if state_path.is_file():  # resume
        saved = torch.load(state_path, weights_only=False, map_location=next(model.parameters()).device)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        step = saved["step"]
    rng = random.Random(cfg.seed * 1_000_003 + step)
    model.train()
    while step < cfg.steps:
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        seqs, starts = _batch(rng, tokenizer, cfg, step)
        loss, n_tokens = loss_on_answers(model, seqs, starts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        progress(TrainState(step, loss.item(), n_tokens / (time.perf_counter() - t0)))
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            torch.save(
                {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "config": asdict(cfg)},
                state_path,
            )
    model.eval()
    loaded.model = model.cpu()
    save_checkpoint(loaded, out_dir)
    return loaded
