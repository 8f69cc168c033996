"""Sampling: greedy, temperature, top-k, top-p (nucleus; Holtzman et al. 2020), each request with its
own seeded generator so results do not depend on what else is in the batch."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# Below this temperature sampling is greedy: dividing logits by 1e-300 overflows to inf, and the
# distribution is a point mass on the argmax long before that (vLLM uses the same cut-off).
GREEDY_BELOW = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens and when to stop. temperature 0 = greedy (so is any below GREEDY_BELOW)."""

    max_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()  # stop strings; the text is cut before them
    stop_token_ids: tuple[int, ...] | None = None  # None: the model's EOS ids
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not 0 <= self.temperature < math.inf:  # NaN fails this too
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


def sample_token(logits: Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """One token from a (vocab,) row of logits."""
    if params.greedy:
        return int(logits.argmax())
    return int(torch.multinomial(filtered_probs(logits, params).cpu(), 1, generator=generator))


def filtered_probs(logits: Tensor, params: SamplingParams) -> Tensor:
    """The distribution a sampled request draws from: temperature, then top-k and top-p filtering."""
    scores = logits.float() / params.temperature
    if params.top_k:
        kth = torch.topk(scores, min(params.top_k, scores.numel())).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True)
        cum = sorted_scores.softmax(-1).cumsum(-1)
        drop = cum - sorted_scores.softmax(-1) >= params.top_p  # keep the smallest prefix reaching top_p
        drop[0] = False  # the most likely token always stays (a top_p below float32's range rounds to 0)
        scores = scores.scatter(0, order[drop], float("-inf"))
    return scores.softmax(-1)
