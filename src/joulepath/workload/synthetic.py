"""Seeded synthetic request traces whose statistics are fitted to a real trace.

Model: arrivals are a gamma renewal process (inter-arrival coefficient of variation is a parameter;
1.0 = Poisson); prompt and output lengths are independent mixtures of log-normals (the Azure trace's
lengths are multi-modal, so one log-normal fits badly), clipped to the observed range.

`fit_synthetic(trace)` fits them: rate and CV by moments of the inter-arrival gaps; each length
mixture by expectation-maximisation of a Gaussian mixture on log(tokens). The defaults below are
that fit applied to the Azure LLM inference 2023 conversation trace (19,366 requests, one hour);
`tests/workload/test_synthetic.py` re-fits the shared copy and checks these numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from joulepath.workload.trace import Trace


@dataclass(frozen=True)
class LogNormalMixture:
    """Mixture of log-normals over token counts; `weights` sum to 1, `mu`/`sigma` of log(tokens)."""

    weights: tuple[float, ...]
    mu: tuple[float, ...]
    sigma: tuple[float, ...]
    min_tokens: int
    max_tokens: int

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        comp = rng.choice(len(self.weights), size=n, p=np.array(self.weights) / sum(self.weights))
        logs = rng.normal(np.array(self.mu)[comp], np.array(self.sigma)[comp])
        tokens: np.ndarray = np.clip(np.rint(np.exp(logs)), self.min_tokens, self.max_tokens).astype(np.int64)
        return tokens

    @property
    def mean_tokens(self) -> float:
        w, mu, s = np.array(self.weights), np.array(self.mu), np.array(self.sigma)
        return float(np.sum(w * np.exp(mu + s**2 / 2)))


# Fitted to azure_llm_inference_2023_conv.csv by fit_synthetic(read_azure_csv(...), seed=0).
AZURE_CONV_PROMPT = LogNormalMixture(
    weights=(0.633, 0.291, 0.076),
    mu=(6.274, 6.977, 8.316),
    sigma=(1.004, 0.058, 0.02),
    min_tokens=2,
    max_tokens=14050,
)
AZURE_CONV_OUTPUT = LogNormalMixture(
    weights=(0.296, 0.425, 0.279),
    mu=(4.729, 4.572, 6.006),
    sigma=(1.01, 0.357, 0.049),
    min_tokens=7,
    max_tokens=1000,
)


@dataclass(frozen=True)
class SyntheticParams:
    """Parameters of the synthetic generator. Defaults: fitted to the Azure conversation trace."""

    arrival_rate_per_s: float = 5.53
    interarrival_cv: float = 1.094
    prompt: LogNormalMixture = AZURE_CONV_PROMPT
    output: LogNormalMixture = AZURE_CONV_OUTPUT


def generate(params: SyntheticParams, duration_s: float, seed: int = 0, name: str = "synthetic") -> Trace:
    """A trace of gamma-renewal arrivals over `duration_s` seconds; same seed, same trace."""
    if duration_s <= 0 or params.arrival_rate_per_s <= 0 or params.interarrival_cv <= 0:
        raise ValueError("duration_s, arrival_rate_per_s and interarrival_cv must all be > 0")
    rng = np.random.default_rng(seed)
    shape = 1.0 / params.interarrival_cv**2
    scale = 1.0 / (params.arrival_rate_per_s * shape)
    n_draw = int(
        duration_s * params.arrival_rate_per_s * 1.2 + 10 * np.sqrt(duration_s * params.arrival_rate_per_s) + 10
    )
    arrivals = np.cumsum(rng.gamma(shape, scale, size=n_draw))
    while arrivals[-1] < duration_s:  # rare: draw more until the window is covered
        arrivals = np.concatenate([arrivals, arrivals[-1] + np.cumsum(rng.gamma(shape, scale, size=n_draw))])
    arrivals = arrivals[arrivals < duration_s]
    arrivals = arrivals - arrivals[0] if len(arrivals) else arrivals
    n = len(arrivals)
    return Trace(
        name=name,
        arrival_s=arrivals,
        prompt_tokens=params.prompt.sample(rng, n),
        output_tokens=params.output.sample(rng, n),
        source=(
            f"synthetic: gamma renewal, rate {params.arrival_rate_per_s:g}/s, "
            f"cv {params.interarrival_cv:g}, seed {seed}"
        ),
    )


def fit_lognormal_mixture(tokens: np.ndarray, k: int = 3, seed: int = 0, iters: int = 300) -> LogNormalMixture:
    """EM for a k-component Gaussian mixture on log(tokens), initialised at log quantiles."""
    x = np.log(np.maximum(tokens, 1).astype(float))
    rng = np.random.default_rng(seed)
    mu = np.quantile(x, (np.arange(k) + 0.5) / k) + rng.normal(0, 1e-3, k)
    sigma = np.full(k, x.std() / k)
    w = np.full(k, 1.0 / k)
    for _ in range(iters):
        dens = w * np.exp(-0.5 * ((x[:, None] - mu) / sigma) ** 2) / sigma  # (n, k), constant dropped
        resp = dens / np.maximum(dens.sum(axis=1, keepdims=True), 1e-300)
        nk = resp.sum(axis=0)
        w = nk / len(x)
        mu = (resp * x[:, None]).sum(axis=0) / nk
        sigma = np.sqrt((resp * (x[:, None] - mu) ** 2).sum(axis=0) / nk).clip(min=0.02)
    return LogNormalMixture(
        weights=tuple(round(float(v), 3) for v in w),
        mu=tuple(round(float(v), 3) for v in mu),
        sigma=tuple(round(float(v), 3) for v in sigma),
        min_tokens=int(tokens.min()),
        max_tokens=int(tokens.max()),
    )


def fit_synthetic(trace: Trace, k: int = 3, seed: int = 0) -> SyntheticParams:
    """Fit generator parameters to a measured trace (moments for arrivals, EM for lengths)."""
    gaps = np.diff(trace.arrival_s)
    if len(gaps) < 2 or gaps.mean() <= 0:
        raise ValueError(f"trace {trace.name!r} needs at least 3 requests at distinct times to fit arrivals")
    return SyntheticParams(
        arrival_rate_per_s=round(float(1.0 / gaps.mean()), 3),
        interarrival_cv=round(float(gaps.std() / gaps.mean()), 3),
        prompt=fit_lognormal_mixture(trace.prompt_tokens, k, seed),
        output=fit_lognormal_mixture(trace.output_tokens, k, seed),
    )
