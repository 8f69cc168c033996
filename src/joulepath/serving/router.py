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

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

POLICIES = ("threshold", "cost_aware")
FEATURES = ("ngrams", "minilm")  # ngrams: ~0.1 ms a request; minilm: ~20 ms a request on this CPU (measured)
NGRAM_BUCKETS = 2**12  # per analyzer (words, characters): hashed, so nothing is fitted or shipped for them
C_GRID = (0.3, 1.0, 3.0, 10.0)  # inverse L2 strengths tried by cross-validation on the fitting split
FOLDS = 5


def request_features(texts: Sequence[str], prompt_tokens: Sequence[int], kind: str = "ngrams") -> np.ndarray:
    """(N, F) features of requests: `ngrams` (hashed word 1-2-grams and character 2-4-grams of the user
    text, its digit and number counts) or `minilm` (the offline sentence embedding), then log(prompt tokens)."""
    if kind not in FEATURES:
        raise ValueError(f"router features must be one of {FEATURES}, got {kind!r}")
    lengths = np.log1p(np.asarray(prompt_tokens, dtype=np.float64))[:, None] / 10.0  # (N, 1)
    if kind == "minilm":
        from joulepath.serving.semantic import embed

        return np.hstack([embed(list(texts)).numpy(), lengths])  # (N, 385)
    return np.hstack([ngram_features(texts), lengths])


def ngram_features(texts: Sequence[str]) -> np.ndarray:
    """(N, 2 x NGRAM_BUCKETS + 2): hashed word 1-2-grams and character 2-4-grams (each L2-normalised; a
    hashing vectorizer is stateless, so serving computes exactly what fitting saw), the number of digits
    / 20 and of numbers / 5."""
    from sklearn.feature_extraction.text import HashingVectorizer

    words = HashingVectorizer(
        n_features=NGRAM_BUCKETS, ngram_range=(1, 2), alternate_sign=False, token_pattern=r"(?u)\b\w+\b|[^\w\s]"
    )
    chars = HashingVectorizer(n_features=NGRAM_BUCKETS, analyzer="char_wb", ngram_range=(2, 4), alternate_sign=False)
    listed = list(texts)
    counts = np.array([[len(re.findall(r"\d", t)) / 20, len(re.findall(r"\d+", t)) / 5] for t in listed])
    return np.hstack([words.transform(listed).toarray(), chars.transform(listed).toarray(), counts.reshape(-1, 2)])


@dataclass(frozen=True)
class CorrectnessModel:
    """P(correct | features) for each tier: one L2-regularised logistic regression per tier, kept as its
    weights (a dot product to serve; fitted with scikit-learn)."""

    tiers: tuple[str, ...]
    weights: np.ndarray  # (tiers, features)
    bias: np.ndarray  # (tiers,)
    c: float = 1.0  # the inverse regularisation strength it was fitted with

    @classmethod
    def fit(cls, features: np.ndarray, correct: dict[str, np.ndarray], c: float = 1.0) -> CorrectnessModel:
        from sklearn.linear_model import LogisticRegression

        weights, bias = np.zeros((len(correct), features.shape[1])), np.zeros(len(correct))
        for k, y in enumerate(correct.values()):
            if y.min() == y.max():  # one class only: a constant prediction
                bias[k] = _logit(float(y[0]))
                continue
            model = LogisticRegression(C=c, max_iter=2000).fit(features, y.astype(int))
            weights[k], bias[k] = model.coef_[0], model.intercept_[0]
        return cls(tuple(correct), weights, bias, c)

    def predict(self, features: np.ndarray) -> dict[str, np.ndarray]:
        z = features @ self.weights.T + self.bias  # (N, tiers)
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))
        return {tier: p[:, k] for k, tier in enumerate(self.tiers)}


def _logit(p: float) -> float:
    p = min(max(p, 1e-3), 1 - 1e-3)
    return math.log(p / (1 - p))


def out_of_fold(
    features: np.ndarray, correct: dict[str, np.ndarray], c: float, folds: int = FOLDS
) -> dict[str, np.ndarray]:
    """Each example's P(correct) from a model fitted without it (stratified k-fold on the tiers' joint
    outcome): the predictions a knob can be tuned on without the in-sample optimism of the final fit."""
    from sklearn.model_selection import StratifiedKFold

    joint = sum(y.astype(int) << k for k, y in enumerate(correct.values()))
    classes, counts = np.unique(joint, return_counts=True)
    joint = np.where(np.isin(joint, classes[counts < folds]), classes[np.argmax(counts)], joint)  # rare: pooled
    out = {t: np.zeros(len(features)) for t in correct}
    for train, held in StratifiedKFold(folds, shuffle=True, random_state=0).split(features, joint):
        model = CorrectnessModel.fit(features[train], {t: y[train] for t, y in correct.items()}, c)
        for tier, p in model.predict(features[held]).items():
            out[tier][held] = p
    return out


def choose_c(features: np.ndarray, correct: dict[str, np.ndarray], grid: Sequence[float] = C_GRID) -> float:
    """The regularisation with the least out-of-fold log loss, summed over the tiers."""

    def loss(c: float) -> float:
        p = out_of_fold(features, correct, c)
        return sum(
            float(-np.mean(np.where(y, np.log(np.clip(p[t], 1e-6, 1)), np.log(np.clip(1 - p[t], 1e-6, 1)))))
            for t, y in correct.items()
        )

    return min(grid, key=loss)


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
    features: str = "ngrams"  # what `request_features` computes for it

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"router policy must be one of {POLICIES}, got {self.policy!r}")
        if self.features not in FEATURES:
            raise ValueError(f"router features must be one of {FEATURES}, got {self.features!r}")
        if self.model.tiers != self.tiers:
            raise ValueError(f"the correctness model predicts for {self.model.tiers}, the router routes {self.tiers}")

    def route_requests(self, texts: Sequence[str], prompt_tokens: Sequence[int]) -> list[Route]:
        """Routes for requests given as their user texts and prompt lengths."""
        return self.route(request_features(texts, prompt_tokens, self.features))

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
    features: np.ndarray, small_ok: np.ndarray, large_ok: np.ndarray, tiers: tuple[str, str],
    j_per_request: tuple[float, float], policy: str, target: float, kind: str = "ngrams", c: float | None = None,
) -> Router:  # fmt: skip
    """The router (two tiers) fitted on the fitting split, with its knob keeping that split's accuracy >=
    target x the large tier's. The knob is tuned on out-of-fold predictions (each example scored by a
    model that did not see it), and `c` (None: chosen by cross-validation) is the model's regularisation."""
    correct = {tiers[0]: small_ok, tiers[1]: large_ok}
    c = choose_c(features, correct) if c is None else c
    p = out_of_fold(features, correct, c)
    goal = target * float(large_ok.mean())
    if policy == "threshold":
        knobs = [float(x) for x in np.linspace(0.0, 1.0, 101)]
        outcomes = [routed_outcome(p[tiers[0]] >= k, small_ok, large_ok) for k in knobs]
    else:
        gap_j = j_per_request[1] - j_per_request[0]
        knobs = [gap_j * x for x in np.geomspace(0.05, 200, 120)]
        outcomes = [routed_outcome(j_per_request[0] - k * p[tiers[0]] <= j_per_request[1] - k * p[tiers[1]],
                                   small_ok, large_ok) for k in knobs]  # fmt: skip
    model = CorrectnessModel.fit(features, correct, c)
    return Router(model, tiers, j_per_request, policy, best_knob(knobs, outcomes, goal), kind)


def tune_cascade(mean_logprob: np.ndarray, small_ok: np.ndarray, large_ok: np.ndarray, target: float) -> Cascade:
    """The confidence bar keeping dev accuracy >= target x the large tier's with the fewest escalations."""
    goal = target * float(large_ok.mean())
    knobs = sorted({-math.inf, *(float(x) for x in mean_logprob), 0.0})
    outcomes = [routed_outcome(mean_logprob >= k, small_ok, large_ok) for k in knobs]
    return Cascade(best_knob(knobs, outcomes, goal))


# ---- the fitted router, shipped beside the zoo ------------------------------------------------------


def save_router(router: Router, path: Path, provenance: dict[str, object]) -> None:
    """The router as an .npz: its correctness model's weights (float64, exactly as judged) and a JSON
    header (tiers, policy, knob, joules per request, features, and `provenance`: what it was fitted and
    judged on)."""
    header = {
        "tiers": list(router.tiers), "j_per_request": list(router.j_per_request), "policy": router.policy,
        "knob": router.knob, "features": router.features, "c": router.model.c, "provenance": provenance,
    }  # fmt: skip
    with path.open("wb") as f:
        np.savez_compressed(f, weights=router.model.weights, bias=router.model.bias,
                            header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))  # fmt: skip


def feature_width(kind: str) -> int:
    """How many features `request_features` makes for `kind`."""
    return 385 if kind == "minilm" else 2 * NGRAM_BUCKETS + 3


def load_router(path: Path) -> tuple[Router, dict[str, object]]:
    """(router, provenance) from `save_router`'s file; ValueError says what is wrong with a broken one."""
    try:
        with np.load(path) as data:
            header = json.loads(bytes(data["header"]).decode())
            weights, bias = data["weights"].astype(np.float64), data["bias"].astype(np.float64)
        tiers = tuple(header["tiers"])
        model = CorrectnessModel(tiers, weights, bias, float(header["c"]))
        j = tuple(float(x) for x in header["j_per_request"])
        router = Router(model, tiers, j, header["policy"], float(header["knob"]), header["features"])
        provenance = dict(header["provenance"])
        if weights.shape != (len(tiers), feature_width(router.features)) or bias.shape != (len(tiers),):
            raise ValueError(f"weights {weights.shape} do not fit {len(tiers)} tiers x "
                             f"{feature_width(router.features)} {router.features} features")  # fmt: skip
    except Exception as exc:  # a truncated zip, an empty file, a missing key, a wrong shape: all "broken"
        raise ValueError(f"{path}: not a usable router file ({type(exc).__name__}: {exc}); refit it with "
                         "`python benchmarks/routing.py --write-router`") from exc  # fmt: skip
    return router, provenance


ROUTER_DIR = Path(__file__).parent / "data"


def router_path(small: str, large: str) -> Path:
    """Where the router fitted for two zoo tiers is shipped."""
    return ROUTER_DIR / f"router-{small}-{large}.npz"


def model_sha256(spec: str) -> str:
    """The first 16 hex digits of the SHA-256 of a zoo model's weights, tokenizer and chat template (content,
    not timestamps: a fresh clone matches; the tokenizer and template set the prompt the router measures),
    or the spec itself for anything else."""
    import hashlib

    from joulepath.model.checkpoint import ZOO_MODELS, zoo_path

    if spec not in ZOO_MODELS:
        return spec
    digest = hashlib.sha256()
    for name in ("model.safetensors", "tokenizer.json", "chat_template.jinja"):
        file = zoo_path(spec) / name
        digest.update(file.read_bytes() if file.exists() else b"")
    return digest.hexdigest()[:16]


def shipped_router(small: str, large: str, served_per_cell: int) -> tuple[Router | None, dict[str, object], str]:
    """(the router shipped for these tiers, its provenance, "") if it exists, reads, routes these tiers, was
    fitted on these exact models and on no golden dev example among each cell's first `served_per_cell` (the
    ones the main job serves), and passed its gate on the golden test split; else (None, {}, why not)."""
    path = router_path(small, large)
    refit = "refit it with `python benchmarks/routing.py --write-router`"
    if not path.exists():
        return None, {}, f"no router is fitted for {small} -> {large} (python benchmarks/routing.py --write-router)"
    try:
        router, prov = load_router(path)
    except ValueError as exc:
        return None, {}, str(exc)
    if router.tiers != (small, large):
        return None, {}, f"the shipped router routes {router.tiers}, not ({small}, {large}); {refit}"
    for tier in (small, large):
        if prov.get(f"weights_{tier}") != model_sha256(tier):
            return (
                None,
                {},
                f"the shipped router was fitted on another {tier} (weights, tokenizer or template); {refit}",
            )
    if int(prov.get("fit_skip_per_cell", 0)) < served_per_cell:  # type: ignore[call-overload]
        return None, {}, f"the shipped router was fitted on golden dev examples the main job serves; {refit}"
    ratio, target = float(prov.get("test_accuracy_ratio", 0.0)), float(prov.get("target", 1.0))  # type: ignore[arg-type]
    if ratio < target:
        return None, {}, f"the router kept {ratio:.1%} of {large}'s test accuracy, below its {target:.0%} gate"
    return router, prov, ""
