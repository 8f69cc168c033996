"""A tiny simulation core: a clock and named series, nothing about the models that use them.

Components are vectorised over the whole horizon: each reads named series and returns new ones. The
core runs them in order, refuses to overwrite a series (one writer per quantity) and insists on a
unit suffix in every name, so `it_power_w` and `t_outdoor_c` can never be mixed up silently.
A component with state that depends on its own past (a battery's state of charge) loops inside its
`run`; everything else is numpy over arrays.

    >>> clock = Clock(dt_s=3600, n_steps=24)
    >>> series = simulate(clock, [Constant("it_power_w", 1e6)])
    >>> float(series["it_power_w"].sum() * clock.dt_s / 3.6e9)  # MWh over a day
    24.0
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

UNIT_SUFFIXES = (
    "_w",
    "_j",
    "_c",
    "_k",
    "_pct",
    "_frac",
    "_g",
    "_kg",
    "_l",
    "_usd",
    "_pa",
    "_m_s",
    "_w_m2",
    "_g_per_kwh",
    "_usd_per_kwh",
    "_count",
    "_flag",
    "_s",
    "_wh",
)


@dataclass(frozen=True)
class Clock:
    """Uniform steps of `dt_s` seconds from hour `start_hour_of_year` (0 = 1 January 00:00)."""

    dt_s: float
    n_steps: int
    start_hour_of_year: float = 0.0

    def __post_init__(self) -> None:
        if self.dt_s <= 0 or self.n_steps < 1:
            raise ValueError(f"dt_s must be > 0 and n_steps >= 1, got {self.dt_s}, {self.n_steps}")

    @property
    def t_s(self) -> np.ndarray:
        """Start time of each step, seconds from the start."""
        return np.arange(self.n_steps) * self.dt_s

    @property
    def hour_of_year(self) -> np.ndarray:
        """Fractional hour of year at each step (wraps after 8,760)."""
        return (self.start_hour_of_year + self.t_s / 3600.0) % 8760.0

    @property
    def horizon_s(self) -> float:
        return self.dt_s * self.n_steps

    @classmethod
    def year(cls, dt_s: float = 3600.0) -> Clock:
        return cls(dt_s, round(8760 * 3600 / dt_s))


class Component(Protocol):
    """Something that turns named series into more named series."""

    @property
    def name(self) -> str: ...

    def run(self, series: Mapping[str, np.ndarray], clock: Clock) -> dict[str, np.ndarray]: ...


class Series(dict[str, np.ndarray]):
    """Named arrays of one length; a name needs a unit suffix and is written once."""

    def __init__(self, n_steps: int) -> None:
        super().__init__()
        self.n_steps = n_steps

    def add(self, name: str, values: np.ndarray | float, writer: str) -> None:
        if not name.endswith(UNIT_SUFFIXES):
            raise ValueError(f"{writer}: series {name!r} has no unit suffix (one of {UNIT_SUFFIXES})")
        if name in self:
            raise ValueError(f"{writer}: series {name!r} is already written; one writer per quantity")
        arr = np.broadcast_to(np.asarray(values, dtype=float), (self.n_steps,)).copy()
        self[name] = arr


def simulate(clock: Clock, components: Iterable[Component], inputs: Mapping[str, np.ndarray] | None = None) -> Series:
    """Run components in order over the clock's horizon; returns every series."""
    series = Series(clock.n_steps)
    for name, values in (inputs or {}).items():
        series.add(name, values, "inputs")
    for component in components:
        for name, values in component.run(series, clock).items():
            series.add(name, values, component.name)
    return series


@dataclass(frozen=True)
class Constant:
    """A constant series (handy for tests and fixed loads)."""

    series_name: str
    value: float
    name: str = "constant"

    def run(self, series: Mapping[str, np.ndarray], clock: Clock) -> dict[str, np.ndarray]:
        return {self.series_name: np.full(clock.n_steps, self.value)}


def hourly_to_clock(hourly: np.ndarray, clock: Clock) -> np.ndarray:
    """Linear interpolation of an hourly year (8,760 values, hour h at index h) onto the clock, wrapping."""
    hours = clock.hour_of_year
    lo = np.floor(hours).astype(int) % len(hourly)
    hi = (lo + 1) % len(hourly)
    frac = hours - np.floor(hours)
    return hourly[lo] * (1 - frac) + hourly[hi] * frac
