"""Tiered processing: send each request to the cheapest model tier that will answer it right.

Two mechanisms, each tuned on the golden dev split and judged on the test split only:

- **Router** (before any model runs): per tier, a logistic regression predicts P(correct) from cheap
  features of the request — its sentence embedding (the offline MiniLM the guardrails use: it carries
  the task and its difficulty) and its prompt length. Policies: `threshold` (the cheapest tier whose
  predicted accuracy clears a bar) and `cost_aware` (the tier that minimises expected joules minus
  lambda x predicted accuracy; lambda chosen so the dev split keeps the accuracy target). RouteLLM
  (Ong et al. 2024) routes between a strong and a weak model the same way.
- **Cascade** (after the small tier answered): the small tier's own confidence — the mean log-probability
  of the tokens it emitted, which the engine records with `EngineConfig.track_logprobs` — decides whether
  its answer stands or the request is escalated to the large tier. The escalated request's small-tier
  joules are spent for nothing and are counted (FrugalGPT, Chen et al. 2023, cascades the same way).

The thresholds are chosen on dev as the most small-tier traffic whose dev accuracy stays at or above
`target` x the large tier's dev accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

POLICIES = ("threshold", "cost_aware")


def request_features(texts: Sequence[str], prompt_tokens: Sequence[int]) -> np.ndarray:
    """(N, 385): unit sentence embeddings of the user texts and log(prompt tokens)."""
    from joulepath.serving.semantic import embed

    vectors = embed(list(texts)).numpy()  # (N, 384)
    lengths = np.log1p(np.asarray(prompt_tokens, dtype=np.float64))[:, None]  # (N, 1)
    return np.hstack([vectors, lengths / 10.0])


@dataclass(frozen=True)
class CorrectnessModel:
    """P(correct | features) for each tier: one logistic regression per tier (scikit-learn)."""

    tiers: tuple[str, ...]
    models: tuple[object, ...]

    @classmethod
    def fit(cls, features: np.ndarray, correct: dict[str, np.ndarray], c: float = 1.0) -> CorrectnessModel:
        from sklearn.linear_model import LogisticRegression

        models = []
        for y in correct.values():
            if y.min() == y.max():  # one class only: a constant prediction
                models.append(float(y[0]))
                continue
            models.append(LogisticRegression(C=c, max_iter=2000).fit(features, y.astype(int)))
        return cls(tuple(correct), tuple(models))

    def predict(self, features: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for tier, model in zip(self.tiers, self.models, strict=True):
            if isinstance(model, float):
                out[tier] = np.full(len(features), model)
            else:
                out[tier] = model.predict_proba(features)[:, 1]  # type: ignore[attr-defined]
        return out


@dataclass(frozen=True)
class Route:
    """Where one request goes and why."""

    tier: str
    reason: str


@dataclass(frozen=True)
class Router:
    """Chooses a tier per request; `tiers` run cheapest first, `j_per_request` their measured costs."""

    model: CorrectnessModel
    tiers: tuple[str, ...]
    j_per_request: tuple[float, ...]
    policy: str
    knob: float  # threshold: the predicted-accuracy bar; cost_aware: lambda, J per unit of accuracy

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"router policy must be one of {POLICIES}, got {self.policy!r}")

    def route(self, features: np.ndarray) -> list[Route]:
        p = self.model.predict(features)
        return [self._one({t: float(p[t][i]) for t in self.tiers}) for i in range(len(features))]

    def _one(self, p: dict[str, float]) -> Route:
        if self.policy == "threshold":
            for tier in self.tiers[:-1]:
                if p[tier] >= self.knob:
                    return Route(tier, f"threshold: P(correct on {tier}) {p[tier]:.2f} >= {self.knob:.2f}")
            return Route(self.tiers[-1], f"threshold: no cheaper tier clears {self.knob:.2f}")
        score = {t: j - self.knob * p[t] for t, j in zip(self.tiers, self.j_per_request, strict=True)}
        best = min(self.tiers, key=lambda t: score[t])
        return Route(best, f"cost_aware: J - {self.knob:.3g} x P(correct) lowest on {best}")


@dataclass(frozen=True)
class Cascade:
    """Keep the small tier's answer unless its mean token log-probability is below `min_mean_logprob`."""

    min_mean_logprob: float

    def escalate(self, logprob_sum: float, output_tokens: int) -> bool:
        return confidence(logprob_sum, output_tokens) < self.min_mean_logprob


def confidence(logprob_sum: float, output_tokens: int) -> float:
    """Mean natural-log probability of the emitted tokens (0 is certain)."""
    return logprob_sum / max(output_tokens, 1)


# ---- tuning on the dev split ------------------------------------------------------------------------


def best_knob(candidates: Sequence[float], outcomes: list[tuple[float, float]], goal: float) -> float:
    """The candidate with the most small-tier share among those whose accuracy clears `goal` (the first
    such on a tie); with none clearing it, the one with the best accuracy. `outcomes`: (share, accuracy)."""
    passing = [k for k, (_, accuracy) in enumerate(outcomes) if accuracy >= goal - 1e-12]
    if passing:
        return candidates[max(passing, key=lambda k: outcomes[k][0])]
    return candidates[int(np.argmax([accuracy for _, accuracy in outcomes]))]


def routed_outcome(to_small: np.ndarray, small_ok: np.ndarray, large_ok: np.ndarray) -> tuple[float, float]:
    """(small-tier share, accuracy) of sending `to_small` requests to the small tier, the rest large."""
    correct = np.where(to_small, small_ok, large_ok)
    return float(to_small.mean()), float(correct.mean())


def tune_router(
    model: CorrectnessModel, features: np.ndarray, small_ok: np.ndarray, large_ok: np.ndarray,
    tiers: tuple[str, str], j_per_request: tuple[float, float], policy: str, target: float,
) -> Router:  # fmt: skip
    """The router whose knob keeps dev accuracy >= target x the large tier's (two tiers)."""
    p = model.predict(features)
    goal = target * float(large_ok.mean())
    if policy == "threshold":
        knobs = [float(x) for x in np.linspace(0.0, 1.0, 101)]
        outcomes = [routed_outcome(p[tiers[0]] >= k, small_ok, large_ok) for k in knobs]
    else:
        gap_j = j_per_request[1] - j_per_request[0]
        knobs = [gap_j * x for x in np.geomspace(0.05, 200, 120)]
        outcomes = [routed_outcome(j_per_request[0] - k * p[tiers[0]] <= j_per_request[1] - k * p[tiers[1]],
                                   small_ok, large_ok) for k in knobs]  # fmt: skip
    return Router(model, tiers, j_per_request, policy, best_knob(knobs, outcomes, goal))


def tune_cascade(mean_logprob: np.ndarray, small_ok: np.ndarray, large_ok: np.ndarray, target: float) -> Cascade:
    """The confidence bar keeping dev accuracy >= target x the large tier's with the fewest escalations."""
    goal = target * float(large_ok.mean())
    knobs = sorted({-math.inf, *(float(x) for x in mean_logprob), 0.0})
    outcomes = [routed_outcome(mean_logprob >= k, small_ok, large_ok) for k in knobs]
    return Cascade(best_knob(knobs, outcomes, goal))
