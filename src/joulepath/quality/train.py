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

from joulepath.model import JsonTokenizer, LoadedModel, ModelConfig, PaddedBatchAttention, Transformer, save_checkpoint
from joulepath.model.checkpoint import init_weights
from joulepath.quality.tasks import CHAT_TEMPLATE, LEVELS, SKILLS, chat_prompt, chat_target, generate
from joulepath.quality.tokenizer import corpus, train_tokenizer

ZOO: dict[str, dict[str, Any]] = {  # shapes of the built-in models (vocabulary set by the tokenizer)
    "jp-small": dict(d_model=192, n_layers=4, n_heads=6, n_kv_heads=2, d_ff=576),  # ~1.8 M parameters
    "jp-large": dict(d_model=320, n_layers=7, n_heads=8, n_kv_heads=4, d_ff=960),  # ~8.8 M parameters
}


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "jp-small"
    steps: int = 2000
    tokens_per_step: int = 4096  # padded tokens per optimizer step
    lookup_every: int = 4  # every 4th step is a batch of long-document lookups
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
    skill_loss: dict[str, float]


def levels_at(step: int, total: int) -> tuple[str, ...]:
    """Curriculum: easy for the first 20 % of steps, + medium to 50 %, then everything."""
    frac = step / max(total, 1)
    return LEVELS[:1] if frac < 0.2 else LEVELS[:2] if frac < 0.5 else LEVELS


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


@dataclass(frozen=True)
class Batch:
    """Right-padded token ids (B, L), the answer-token mask for the loss, and each row's skill."""

    tokens: torch.Tensor
    answer_mask: torch.Tensor
    skills: tuple[str, ...]

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.numel())


def _examples(rng: random.Random, skills: tuple[str, ...], levels: tuple[str, ...], n: int) -> list[Any]:
    return [generate(rng.choice(skills), rng.choice(levels), rng) for _ in range(n)]


def make_batch(rng: random.Random, tok: JsonTokenizer, cfg: TrainConfig, step: int) -> Batch:
    """One step's batch: short skills mixed, or (every `lookup_every`-th step) long-document lookups,
    so sequences in a batch have similar lengths and padding stays small. The batch holds about
    `tokens_per_step` tokens, however long its sequences are."""
    levels = levels_at(step, cfg.steps)
    long_step = "lookup" in cfg.skills and (len(cfg.skills) == 1 or step % cfg.lookup_every == cfg.lookup_every - 1)
    skills = ("lookup",) if long_step else tuple(s for s in cfg.skills if s != "lookup")
    probe = _examples(rng, skills, levels, 8)
    typical = max(len(tok.encode(chat_prompt(e) + chat_target(e))) for e in probe)
    exs = probe + _examples(rng, skills, levels, max(0, cfg.tokens_per_step // typical - len(probe)))
    prompts = tok.encode_batch([chat_prompt(e) for e in exs])
    targets = tok.encode_batch([chat_target(e) for e in exs])
    rows = [(p + t, len(p), e.skill) for p, t, e in zip(prompts, targets, exs, strict=True)]
    rows = [r for r in rows if len(r[0]) <= cfg.max_len]
    length = max(len(r[0]) for r in rows)
    tokens = torch.zeros(len(rows), length, dtype=torch.long)
    answer = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, (ids, start, _) in enumerate(rows):
        tokens[i, : len(ids)] = torch.tensor(ids)
        answer[i, start - 1 : len(ids) - 1] = True  # position j predicts token j + 1
    return Batch(tokens, answer, tuple(r[2] for r in rows))


def loss_on_answers(model: Transformer, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean next-token cross-entropy over answer tokens, and the mean per skill (for logging)."""
    device = next(model.parameters()).device
    b, n = batch.tokens.shape
    tokens, answer = batch.tokens.to(device), batch.answer_mask.to(device)
    positions = torch.arange(n, device=device).repeat(b)
    rows = answer.flatten().nonzero().squeeze(1)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits = model(tokens.flatten(), positions, PaddedBatchAttention(b, n), logit_rows=rows)
    targets = tokens.roll(-1, dims=1).flatten()[rows]
    per_token = F.cross_entropy(logits.float(), targets, reduction="none")
    row_of = rows // n
    by_skill: dict[str, float] = {}
    for skill in set(batch.skills):
        picked = torch.tensor([s == skill for s in batch.skills], device=device)[row_of]
        by_skill[skill] = float(per_token[picked].mean().item())
    return per_token.mean(), by_skill


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
    step, seconds, started = 0, 0.0, time.perf_counter()
    if state_path.is_file():  # resume
        saved = torch.load(state_path, weights_only=False, map_location=next(model.parameters()).device)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        step = saved["step"]
        seconds = float(saved.get("seconds", 0.0))
    rng = random.Random(cfg.seed * 1_000_003 + step)
    model.train()
    while step < cfg.steps:
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        batch = make_batch(rng, tokenizer, cfg, step)
        loss, by_skill = loss_on_answers(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        progress(TrainState(step, loss.item(), batch.n_tokens / (time.perf_counter() - t0), by_skill))
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "step": step,
                    "config": asdict(cfg),
                    "seconds": seconds + time.perf_counter() - started,  # training wall time over resumes
                },
                state_path,
            )
    model.eval()
    loaded.model = model.cpu()
    save_checkpoint(loaded, out_dir)
    return loaded
