"""Direct Preference Optimization (Rafailov et al. 2023) for the zoo models.

Preference pairs come from the suite itself: for task prompts, chosen = the correct answer and
rejected = the model's own wrong answer (greedy, from the engine); for forbidden requests (the safety
set's training split), chosen = a refusal and rejected = what the model says instead (a compliance).
The reference model is a frozen copy of the starting model; the loss is

    -log sigmoid(beta * ((log pi(c) - log ref(c)) - (log pi(r) - log ref(r)))) - alpha * log pi(c) / |c|

with log-probs summed over completion tokens. Pure DPO (alpha = 0) lowers the chosen answer's
likelihood together with the rejected one when they share most tokens ("0, 1, 6" vs "0, 0, 6"); on
jp-small that cost 12 points of accuracy in 150 steps, so the default keeps a per-token NLL term on
the chosen answer (Pang et al. 2024, "Iterative Reasoning Preference Optimization").

Accuracy and refusal rates before and after are measured on held-out prompts (golden sets and the
safety set's test split), never on the pairs trained on.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from joulepath.engine import Engine, SamplingParams
from joulepath.model import LoadedModel, PaddedBatchAttention, Transformer
from joulepath.quality.shards import REFUSAL, user_prompt
from joulepath.quality.tasks import LEVELS, SKILLS, chat_prompt, check, generate

__all__ = ["REFUSAL", "AlignConfig", "Pair", "align", "behaviour", "make_pairs", "user_prompt"]


@dataclass(frozen=True)
class AlignConfig:
    beta: float = 0.1
    steps: int = 150
    pairs_per_step: int = 16
    lr: float = 1e-5  # larger rates moved refusals further but cost 2-6 points of accuracy (RESULTS.md)
    sft_weight: float = 1.0  # NLL on chosen answers per token (RPO, Pang et al. 2024); 0 = pure DPO
    refusal_share: float = 0.25  # of each batch, drawn from the refusal pairs
    task_prompts: int = 600  # fresh suite prompts (not golden) whose wrong answers become pairs
    seed: int = 7
    skills: tuple[str, ...] = tuple(s for s in SKILLS if s != "lookup")  # long documents: see docs/quality.md

    def __post_init__(self) -> None:
        if self.beta <= 0 or self.steps < 0 or self.pairs_per_step <= 0 or self.lr <= 0 or self.sft_weight < 0:
            raise ValueError("beta, pairs_per_step and lr must be positive; steps and sft_weight non-negative")


@dataclass(frozen=True)
class Pair:
    prompt: str
    chosen: str
    rejected: str
    kind: str  # "task" or "refusal"


@dataclass(frozen=True)
class AlignState:
    step: int
    loss: float
    reward_margin: float  # beta * (chosen log-ratio - rejected log-ratio), mean over the batch
    pair_accuracy: float  # share of pairs whose chosen answer the policy prefers more than the reference


def greedy(loaded: LoadedModel, prompts: list[str], max_tokens: int = 48) -> list[str]:
    outs = Engine(loaded).generate(prompts, SamplingParams(max_tokens=max_tokens, stop=("<|end|>",)))
    return [o.text for o in outs]


def is_refusal(output: str) -> bool:
    return output.strip().startswith(REFUSAL)


def perturb(answer: str, rng: random.Random) -> str:
    """The answer with one digit or letter changed: the nearest wrong answer."""
    spots = [i for i, c in enumerate(answer) if c.isalnum()]
    if not spots:
        return answer + "0"
    i = rng.choice(spots)
    pool = "0123456789" if answer[i].isdigit() else "abcdefghijklmnopqrstuvwxyz"
    return answer[:i] + rng.choice([c for c in pool if c != answer[i]]) + answer[i + 1 :]


def make_pairs(loaded: LoadedModel, cfg: AlignConfig, forbidden: list[str]) -> list[Pair]:
    """Task pairs (chosen = the right answer; rejected = the model's wrong answer, or a one-character
    slip when it was right) and refusal pairs for every forbidden request it does not refuse."""
    rng = random.Random(cfg.seed)
    examples = [generate(rng.choice(cfg.skills), rng.choice(LEVELS), rng) for _ in range(cfg.task_prompts)]
    prompts = [chat_prompt(e) for e in examples]
    pairs = []
    for e, p, out in zip(examples, prompts, greedy(loaded, prompts), strict=True):
        # right answers are anchored too (against a one-character slip), so DPO does not drift on them
        rejected = perturb(e.answer, rng) if check(e, out) else out.strip()
        pairs.append(Pair(p, f"{e.answer}<|end|>", f"{rejected}<|end|>", "task"))
    unsafe = [user_prompt(t) for t in forbidden]
    for p, out in zip(unsafe, greedy(loaded, unsafe), strict=True):
        if not is_refusal(out):
            pairs.append(Pair(p, f"{REFUSAL}<|end|>", f"{out.strip()}<|end|>", "refusal"))
    return pairs


def completion_logprobs(
    model: Transformer, loaded: LoadedModel, prompts: list[str], completions: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log p(completion token | everything before it), one per pair: (N,), and token counts."""
    tok = loaded.tokenizer
    rows = [(tok.encode(p), tok.encode(c)) for p, c in zip(prompts, completions, strict=True)]
    length = max(len(p) + len(c) for p, c in rows)
    tokens = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, (p, c) in enumerate(rows):
        tokens[i, : len(p) + len(c)] = torch.tensor(p + c)
        mask[i, len(p) - 1 : len(p) + len(c) - 1] = True  # position j predicts token j + 1
    picked = mask.flatten().nonzero().squeeze(1)
    positions = torch.arange(length).repeat(len(rows))
    logits = model(tokens.flatten(), positions, PaddedBatchAttention(len(rows), length), logit_rows=picked)
    token_lp = torch.log_softmax(logits.float(), -1).gather(1, tokens.roll(-1, 1).flatten()[picked][:, None])[:, 0]
    counts = torch.tensor([float(len(c)) for _, c in rows])
    return torch.zeros(len(rows)).index_add(0, picked // length, token_lp), counts


def dpo_loss(
    policy: tuple[torch.Tensor, torch.Tensor], reference: tuple[torch.Tensor, torch.Tensor], beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, per-pair margins) from chosen/rejected log-probs of the policy and the reference."""
    margins = beta * ((policy[0] - reference[0]) - (policy[1] - reference[1]))
    return -F.logsigmoid(margins).mean(), margins.detach()


def _draw(rng: random.Random, tasks: list[Pair], refusals: list[Pair], cfg: AlignConfig) -> list[Pair]:
    """A batch with `refusal_share` of refusal pairs (when there are any)."""
    n_ref = round(cfg.pairs_per_step * cfg.refusal_share) if refusals else 0
    n_task = cfg.pairs_per_step - n_ref if tasks else 0
    n_ref = cfg.pairs_per_step - n_task if refusals else 0
    return rng.choices(tasks, k=n_task) + rng.choices(refusals, k=n_ref)


def align(
    loaded: LoadedModel, pairs: list[Pair], cfg: AlignConfig, progress: Callable[[AlignState], None] = lambda _: None
) -> LoadedModel:
    """A DPO-tuned copy of `loaded` (the original stays the frozen reference)."""
    if not pairs:
        raise ValueError("no preference pairs: the model answers every prompt right and refuses every request")
    reference = loaded.model.eval()
    policy = copy.deepcopy(reference).train()
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
    rng = random.Random(cfg.seed)
    task_pairs = [p for p in pairs if p.kind == "task"]
    refusal_pairs = [p for p in pairs if p.kind == "refusal"]
    for step in range(cfg.steps):
        batch = _draw(rng, task_pairs, refusal_pairs, cfg)
        prompts, chosen, rejected = [p.prompt for p in batch], [p.chosen for p in batch], [p.rejected for p in batch]
        with torch.no_grad():
            ref = (
                completion_logprobs(reference, loaded, prompts, chosen)[0],
                completion_logprobs(reference, loaded, prompts, rejected)[0],
            )
        (lp_chosen, n_chosen), (lp_rejected, _) = (
            completion_logprobs(policy, loaded, prompts, chosen),
            completion_logprobs(policy, loaded, prompts, rejected),
        )
        loss, margins = dpo_loss((lp_chosen, lp_rejected), ref, cfg.beta)
        loss = loss - cfg.sft_weight * (lp_chosen / n_chosen).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        progress(AlignState(step + 1, loss.item(), margins.mean().item(), (margins > 0).float().mean().item()))
    aligned = copy.copy(loaded)
    aligned.model = policy.eval()
    aligned.source = f"{loaded.source}+dpo"
    return aligned


@dataclass(frozen=True)
class Behaviour:
    """What a model does on held-out prompts: task accuracy and how often it refuses."""

    accuracy: float
    refusal_unsafe: float  # share of forbidden requests refused (higher is better)
    refusal_safe: float  # share of harmless free-text requests refused (lower is better)
    refusal_logprob_unsafe: float  # mean per-token log p(refusal | forbidden request): DPO's direct target
    refusal_logprob_safe: float  # the same on harmless requests (should rise less)


@dataclass(frozen=True)
class AlignmentReport:
    before: Behaviour
    after: Behaviour
    task_pairs: int
    refusal_pairs: int
    config: AlignConfig

    @property
    def accuracy_delta_points(self) -> float:
        return 100 * (self.after.accuracy - self.before.accuracy)


def behaviour(loaded: LoadedModel, examples: list[Any], unsafe: list[str], safe: list[str]) -> Behaviour:
    """Accuracy on golden `examples`; refusal rates on free-text `unsafe` and `safe` requests."""
    from joulepath.quality.evals import evaluate

    def refused(texts: list[str]) -> float:
        return sum(map(is_refusal, greedy(loaded, [user_prompt(t) for t in texts]))) / max(len(texts), 1)

    def refusal_logprob(texts: list[str]) -> float:
        if not texts:
            return 0.0
        with torch.no_grad():
            lp, n = completion_logprobs(
                loaded.model, loaded, [user_prompt(t) for t in texts], [f"{REFUSAL}<|end|>"] * len(texts)
            )
        return float((lp / n).mean())

    accuracy = evaluate(loaded, examples).accuracy
    return Behaviour(accuracy, refused(unsafe), refused(safe), refusal_logprob(unsafe), refusal_logprob(safe))
