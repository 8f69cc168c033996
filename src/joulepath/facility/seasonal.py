"""Shared by the synthetic weather and grid models: annual + daily harmonics and AR(1) noise, and
their least-squares fit to a measured hourly year."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HOURS = 8760


def harmonics(n: int = HOURS) -> np.ndarray:
    """Design matrix (n, 5): 1, cos/sin of the day of year, cos/sin of the hour of day."""
    h = np.arange(n)
    day, hod = 2 * np.pi * (h / 24.0) / 365.0, 2 * np.pi * (h % 24) / 24.0
    return np.column_stack([np.ones(n), np.cos(day), np.sin(day), np.cos(hod), np.sin(hod)])


@dataclass(frozen=True)
class HarmonicFit:
    coef: np.ndarray  # (5,)
    residual: np.ndarray  # (n,)
    ar1: float  # lag-1 autocorrelation of the residual
    innovation_sd: float  # std of the AR(1) shocks that reproduce the residual's variance


def fit_harmonics(y: np.ndarray) -> HarmonicFit:
    x = harmonics(len(y))
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    ar1 = float(np.corrcoef(resid[:-1], resid[1:])[0, 1])
    return HarmonicFit(coef, resid, ar1, float(resid.std() * np.sqrt(1 - ar1**2)))


def ar1_noise(rng: np.random.Generator, n: int, innovation_sd: float, ar1: float) -> np.ndarray:
    """AR(1) series started from its stationary distribution (one loop per synthetic year)."""
    shocks = rng.normal(0, innovation_sd, n)
    noise = np.empty(n)
    noise[0] = shocks[0] / np.sqrt(max(1 - ar1**2, 1e-6))
    for i in range(1, n):
        noise[i] = ar1 * noise[i - 1] + shocks[i]
    return noise
