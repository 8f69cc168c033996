"""Self-distilled draft block (`model/eagle.py`): trained on the target's own features and greedy answers.

A speculative decoder is scored on whether its guesses equal the tokens the *served* model emits, so the
draft learns the served model, not the training data (Medusa's and EAGLE's authors both distill from the
base model for this reason). CPU is enough: the target is frozen and runs forward once per example; only
the one-block draft trains.

Pipeline:
1. `distill_examples`: fresh prompts from the task suite's generators, drawn from their own seed, with
   every golden dev/test prompt left out (acceptance is scored on golden dev answers).
2. `greedy_answers`: the target answers them greedily (the engine, continuous batching).
3. `collect_features`: one teacher-forced forward over prompt + answer + <|end|>: the target's final normed
   hidden state at every position (stored bf16) and its greedy next token there.
4. `fit_eagle`: the block learns, at every position i, f_{i+1} from (f_i, x_{i+1}) (smooth-L1 regression)
   and the target's greedy token after i+1 through the target's frozen LM head (cross-entropy), answer
   positions weighted fully and prompt positions less; inputs get a little noise, as EAGLE does, so that
   drafting on its own predicted features does not drift at once.

Tried first and not kept: Medusa-1 heads (one residual block per future token, `model/mtp.py`) fine-tuned
on the same self-generated answers: 1.62 -> 1.59 tokens per verify step on golden dev (RESULTS.md): a
hidden state alone does not carry the tokens two or more positions ahead on these tasks.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from joulepath.engine import EngineConfig
from joulepath.model import LoadedModel
from joulepath.model.eagle import EagleConfig, EagleDraft
from joulepath.model.transformer import DenseCausalAttention
from joulepath.quality import golden
from joulepath.quality.evals import evaluate
from joulepath.quality.tasks import LEVELS, SKILLS, Example, chat_prompt, generate

END = "<|end|>"
IGNORE = -100  # cross-entropy ignore index


@dataclass(frozen=True)
class DistillConfig:
    """Settings of one self-distillation run (every field is recorded beside the shipped block)."""

    per_cell: int = 125  # prompts per skill x level
    seed: int = 20261128  # the generators' seed: differs from the golden sets' and from training's
    epochs: int = 6
    pack_tokens: int = 4096  # tokens per forward (whole sequences packed), target and draft alike
    lr: float = 1e-3
    weight_decay: float = 0.01
    prompt_weight: float = 0.2  # loss weight of positions inside the prompt (answer positions: 1)
    token_weight: float = 1.0  # cross-entropy weight beside the feature regression's 1
    noise: float = 0.1  # uniform input noise, in units of the features' standard deviation
    max_tokens: int = 48


@dataclass(frozen=True)
class Features:
    """One teacher-forced sequence: token ids (n,), the target's final normed hidden states (n, d) in bf16,
    its greedy next token at each position (n,), and where the prompt ends (its last position + 1)."""

    ids: Tensor
    hidden: Tensor
    greedy: Tensor
    prompt_len: int


@dataclass(frozen=True)
class FitLog:
    steps: int
    seconds: float
    loss_first: float
    loss_last: float
    token_accuracy_answer: float  # top-1 of the draft's first guess on answer positions, last epoch (teacher-forced)


def golden_prompts() -> set[str]:
    """Every golden dev and test prompt (kept out of distillation data)."""
    return {chat_prompt(e) for split in ("dev", "test") for e in golden.load(split)}


def distill_examples(per_cell: int, seed: int) -> list[Example]:
    """`per_cell` fresh examples for every skill x level, none of them a golden prompt."""
    rng = random.Random(seed)
    held_out = golden_prompts()
    out: list[Example] = []
    for skill in SKILLS:
        for level in LEVELS:
            made = 0
            while made < per_cell:
                ex = generate(skill, level, rng)
                if chat_prompt(ex) in held_out:
                    continue
                out.append(ex)
                made += 1
    return out


def greedy_answers(loaded: LoadedModel, examples: list[Example], max_tokens: int = 48) -> list[str]:
    """The model's own greedy answers (text up to, not including, <|end|>)."""
    report = evaluate(loaded, examples, EngineConfig(max_batch=32), max_tokens=max_tokens)
    return [text.replace(END, "") for text in report.outputs]


def packs(lengths: list[int], pack_tokens: int) -> list[list[int]]:
    """Indices grouped so that each group's lengths sum to at most `pack_tokens` (a longer one alone).

    >>> packs([3, 3, 5, 9], 8)
    [[0, 1], [2], [3]]
    """
    out: list[list[int]] = []
    used = 0
    for i, n in enumerate(lengths):
        if out and used + n <= pack_tokens:
            out[-1].append(i)
            used += n
        else:
            out.append([i])
            used = n
    return out


def collect_features(
    loaded: LoadedModel, examples: list[Example], answers: list[str], pack_tokens: int = 4096
) -> list[Features]:
    """The target's features over prompt + answer + <|end|> for each example (packed forwards)."""
    tok = loaded.tokenizer
    seqs = [(tok.encode(chat_prompt(e)), tok.encode(a + END)) for e, a in zip(examples, answers, strict=True)]
    return sequence_features(loaded, seqs, pack_tokens)


@torch.inference_mode()
def sequence_features(
    loaded: LoadedModel, seqs: list[tuple[list[int], list[int]]], pack_tokens: int = 4096
) -> list[Features]:
    """`Features` of (prompt ids, answer ids) pairs: one dense causal forward per pack of whole sequences."""
    model = loaded.model
    device = next(model.parameters()).device
    out: list[Features] = []
    for group in packs([len(p) + len(a) for p, a in seqs], pack_tokens):
        lens = [len(seqs[i][0]) + len(seqs[i][1]) for i in group]
        ids = torch.tensor([t for i in group for t in seqs[i][0] + seqs[i][1]], device=device)
        positions = torch.cat([torch.arange(n, device=device) for n in lens])
        h = model.norm(model.trunk(ids, positions, DenseCausalAttention(lens)))
        greedy = model.output(h).argmax(-1)
        start = 0
        for i, n in zip(group, lens, strict=True):
            out.append(Features(ids[start : start + n].cpu(), h[start : start + n].to("cpu", torch.bfloat16),
                                greedy[start : start + n].cpu(), len(seqs[i][0])))  # fmt: skip
            start += n
    return out


@dataclass(frozen=True)
class EagleBatch:
    """One packed training batch of the draft block: for each sequence, positions i = 0..n-2."""

    features: Tensor  # (T, d) f_i, with EAGLE's input noise
    next_embeds: Tensor  # (T, d) embeddings of x_{i+1}
    positions: Tensor  # (T,) i
    target_features: Tensor  # (T, d) f_{i+1}
    target_tokens: Tensor  # (T,) the target's greedy token after i+1 (IGNORE at a sequence's last position)
    weights: Tensor  # (T,) 1 where f_{i+1} produces an answer token, prompt_weight inside the prompt
    answer: Tensor  # (T,) bool: f_{i+1} produces an answer token
    lengths: list[int]  # positions per sequence


def eagle_batch(
    feats: list[Features], embed: Tensor, prompt_weight: float, noise_sd: float, gen: torch.Generator | None
) -> EagleBatch:
    """Inputs and targets of one packed batch (`EagleBatch`)."""
    f_in, e_in, pos, f_out, tok_out, answer, lens = [], [], [], [], [], [], []
    for s in feats:
        n = len(s.ids) - 1
        f = s.hidden.float()
        f_in.append(f[:-1])
        e_in.append(embed[s.ids[1:]])
        pos.append(torch.arange(n))
        f_out.append(f[1:])
        target = s.greedy[1:].clone()
        target[-1] = IGNORE  # after the last token: nothing the answer needs
        tok_out.append(target)
        is_answer = torch.zeros(n, dtype=torch.bool)
        is_answer[s.prompt_len - 2 :] = True  # f_{i+1} produces an answer token from i + 1 >= prompt_len - 1
        answer.append(is_answer)
        lens.append(n)
    x = torch.cat(f_in)
    if noise_sd > 0:
        x = x + (torch.rand(x.shape, generator=gen) * 2 - 1) * noise_sd
    is_ans = torch.cat(answer)
    weights = torch.where(is_ans, 1.0, prompt_weight)
    return EagleBatch(x, torch.cat(e_in), torch.cat(pos), torch.cat(f_out), torch.cat(tok_out), weights, is_ans, lens)


def eagle_loss(
    draft: EagleDraft, lm_head: Tensor, batch: EagleBatch, token_weight: float
) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, right first guesses on answer positions, answer positions) of one batch."""
    b = batch
    pred = draft(b.features, b.next_embeds, b.positions, DenseCausalAttention(b.lengths))
    w = b.weights
    reg = (F.smooth_l1_loss(pred, b.target_features, reduction="none").mean(-1) * w).sum() / w.sum()
    want = b.target_tokens
    valid = want != IGNORE
    logits = pred @ lm_head
    ce = F.cross_entropy(logits, want.clamp(min=0), reduction="none")
    cls = (ce * w * valid).sum() / (w * valid).sum().clamp(min=1e-9)
    scored = valid & b.answer
    right = (logits.detach().argmax(-1) == want)[scored].float().sum()
    return reg + token_weight * cls, right, scored.float().sum()


def epoch_packs(feats: list[Features], pack_tokens: int, gen: torch.Generator) -> list[list[Features]]:
    """One epoch: the sequences shuffled, then packed whole into groups of at most `pack_tokens` positions."""
    shuffled = [feats[i] for i in torch.randperm(len(feats), generator=gen).tolist()]
    return [[shuffled[i] for i in group] for group in packs([len(f.ids) - 1 for f in shuffled], pack_tokens)]


def fit_eagle(
    loaded: LoadedModel, feats: list[Features], cfg: DistillConfig, draft: EagleDraft | None = None
) -> tuple[EagleDraft, FitLog]:
    """Train a draft block (a fresh one unless given) on `feats` (AdamW, warm-up then cosine decay)."""
    if not feats:
        raise ValueError("no features to fit the draft block on: give distillation prompts with answers")
    target = loaded.model
    draft = draft or EagleDraft(EagleConfig.for_target(loaded.config), loaded.config)
    lm_head = target.output.weight.detach().float()  # (d, vocab), frozen
    embed = target.embed(torch.arange(loaded.config.vocab_size)).detach().float()  # (vocab, d), frozen
    sd = float(torch.cat([f.hidden[:64].float() for f in feats[:256]]).std())
    opt = torch.optim.AdamW(draft.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    epochs = [epoch_packs(feats, cfg.pack_tokens, gen) for _ in range(cfg.epochs)]  # drawn up front: the
    total = sum(len(e) for e in epochs)  # schedule's length is the real number of steps
    warm = max(1, total // 30)
    losses: list[float] = []
    right = count = 0.0
    t0 = time.perf_counter()
    step = 0
    draft.train()
    for epoch in epochs:
        right = count = 0.0
        for group in epoch:
            lr = cfg.lr * min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * step / total))
            for g in opt.param_groups:
                g["lr"] = lr
            batch = eagle_batch(group, embed, cfg.prompt_weight, cfg.noise * sd, gen)
            loss, r, c = eagle_loss(draft, lm_head, batch, cfg.token_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(draft.parameters(), 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            right, count = right + float(r), count + float(c)
            step += 1
    draft.eval()
    per_epoch = max(1, len(epochs[-1]))
    last = sum(losses[-per_epoch:]) / min(per_epoch, len(losses))
    return draft, FitLog(step, time.perf_counter() - t0, losses[0], last, right / count if count else 0.0)
