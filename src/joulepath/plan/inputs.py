"""What the planner is asked: demand, latency targets, the model, the site and its prices, and the space
of designs to search. Plain frozen dataclasses; `plan.toml_input.read_plan` builds them from a TOML file.

    >>> d = Demand.flat(1000.0, prompt_tokens=1000, output_tokens=250)
    >>> d.peak_tokens_per_s, d.mean_prompt_tokens_per_s
    (1000.0, 4000.0)
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

from joulepath.facility.grid import Tariff
from joulepath.hw.perf import TransformerSpec

DAY_S = 86400.0


@dataclass(frozen=True)
class Demand:
    """Output tokens/s the fleet must serve, as a daily curve of equal bins, and the request shape.

    `tokens_per_s[i]` is the mean output-token rate in bin i of a day (`bin_s` = 86400 / bins)."""

    tokens_per_s: tuple[float, ...]
    prompt_tokens: float  # mean prompt length of a request
    output_tokens: float  # mean output length
    prompt_tokens_p99: float  # 99th percentile prompt length (sets the p99 TTFT)
    source: str = "assumed: a flat demand curve"

    def __post_init__(self) -> None:
        if not self.tokens_per_s or min(self.tokens_per_s) < 0 or max(self.tokens_per_s) <= 0:
            raise ValueError("demand needs at least one bin, none negative, some above zero")
        if self.prompt_tokens <= 0 or self.output_tokens <= 0 or self.prompt_tokens_p99 < self.prompt_tokens:
            raise ValueError("prompt/output tokens must be > 0 and prompt_tokens_p99 >= prompt_tokens")

    @classmethod
    def flat(cls, tokens_per_s: float, prompt_tokens: float, output_tokens: float) -> Demand:
        """A constant rate all day; p99 prompt assumed 3x the mean (Azure 2023 conversation trace: ~3x)."""
        return cls((tokens_per_s,), prompt_tokens, output_tokens, 3.0 * prompt_tokens)

    @classmethod
    def from_requests(
        cls, arrival_s: np.ndarray, prompt_tokens: np.ndarray, output_tokens: np.ndarray, n_bins: int = 24
    ) -> Demand:
        """A daily curve from a request trace: the trace's horizon cut into `n_bins` bins, each bin's
        output-token rate taken as one bin of the day (a trace of minutes becomes the day's shape)."""
        if len(arrival_s) == 0:
            raise ValueError("the trace has no requests")
        horizon_s = float(arrival_s.max()) + 1e-9
        idx = np.minimum((arrival_s / horizon_s * n_bins).astype(int), n_bins - 1)
        per_bin = np.bincount(idx, weights=output_tokens, minlength=n_bins) / (horizon_s / n_bins)
        p99 = float(np.percentile(prompt_tokens, 99))
        source = f"trace: {len(arrival_s)} requests over {horizon_s:.0f} s, shape stretched to a day"
        mean_p, mean_o = float(prompt_tokens.mean()), float(output_tokens.mean())
        return cls(tuple(float(x) for x in per_bin), mean_p, mean_o, max(p99, mean_p), source)

    @property
    def bin_s(self) -> float:
        return DAY_S / len(self.tokens_per_s)

    @property
    def peak_tokens_per_s(self) -> float:
        return max(self.tokens_per_s)

    @property
    def mean_tokens_per_s(self) -> float:
        return float(np.mean(self.tokens_per_s))

    @property
    def mean_prompt_tokens_per_s(self) -> float:
        """Prompt tokens/s arriving on average (requests/s x mean prompt length)."""
        return self.mean_tokens_per_s / self.output_tokens * self.prompt_tokens

    def scaled(self, factor: float) -> Demand:
        """The same shape at `factor` times the rate."""
        return Demand(
            tuple(x * factor for x in self.tokens_per_s),
            self.prompt_tokens,
            self.output_tokens,
            self.prompt_tokens_p99,
            f"{self.source}, x{factor:g}",
        )


@dataclass(frozen=True)
class Slo:
    """Latency targets at the 99th percentile, seconds."""

    ttft_p99_s: float = 2.0
    tpot_p99_s: float = 0.1


@dataclass(frozen=True)
class Site:
    """The site's limits and surroundings: power feed, rack density, cooling design(s), climate, grid."""

    feed_mw: float = 50.0  # utility feed at the meter
    rack_kw_max: float = 140.0  # what the site's power distribution delivers to one rack
    cooling_presets: tuple[str, ...] = ("modern-air", "hyperscale-liquid")  # facility presets to try
    climate: str = "temperate"
    grid_region: str = "pjm"
    host_w_per_device: float = 300.0  # assumed: CPU, DRAM, NICs per accelerator (joulepath's scenario default)


@dataclass(frozen=True)
class AcceleratorPrice:
    """Capital price of one accelerator and its server share, USD, with where the figures come from."""

    usd_per_device: float
    usd_server_per_device: float
    kind: str  # reported | assumed
    source: str


@dataclass(frozen=True)
class RackClass:
    """A rack class: price and the most IT power it carries (kW)."""

    usd_per_rack: float
    max_kw: float
    kind: str
    source: str


@dataclass(frozen=True)
class Prices:
    """Capital prices (sourced table, `plan/data/prices.toml`), energy tariff and carbon price."""

    accelerators: dict[str, AcceleratorPrice]
    racks: dict[str, RackClass]
    facility_usd_per_mw_it: float
    liquid_premium_frac: float
    facility_years: float
    accelerator_years: float
    rack_years: float
    table_date: str
    tariff: Tariff = field(default_factory=Tariff)
    carbon_usd_per_t: float = 0.0  # optional carbon price, USD per tonne CO2

    def accelerator(self, name: str) -> AcceleratorPrice:
        if name not in self.accelerators:
            raise ValueError(f"no price for accelerator {name!r}; priced: {', '.join(sorted(self.accelerators))}")
        return self.accelerators[name]


def _price_table() -> dict[str, Any]:
    text = resources.files("joulepath.plan").joinpath("data", "prices.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


@functools.cache
def default_prices() -> Prices:
    """The shipped price table with the default (assumed) tariff and no carbon price."""
    raw = _price_table()
    fac, amort = raw["facility"], raw["amortisation"]
    return Prices(
        accelerators={k: AcceleratorPrice(**v) for k, v in raw["accelerators"].items()},
        racks={k: RackClass(**v) for k, v in raw["racks"].items()},
        facility_usd_per_mw_it=float(fac["usd_per_mw_it"]),
        liquid_premium_frac=float(fac["liquid_premium_frac"]),
        facility_years=float(fac["lifetime_years"]),
        accelerator_years=float(amort["accelerator_years"]),
        rack_years=float(amort["rack_years"]),
        table_date=str(raw["meta"]["date"]),
    )


@dataclass(frozen=True)
class SearchSpace:
    """The grid the planner searches. Power caps are fractions of each accelerator's TDP."""

    accelerators: tuple[str, ...] = ("h100-sxm", "h200-sxm", "b200", "gb200", "mi300x")
    tensor_parallel: tuple[int, ...] = (1, 2, 4, 8)
    batch_caps: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    precisions: tuple[str, ...] = ("bf16", "fp8")
    power_cap_fracs: tuple[float, ...] = (1.0, 0.8, 0.6)
    phase_split: tuple[bool, ...] = (False, True)


@dataclass(frozen=True)
class PlanInputs:
    """Everything one planning question needs."""

    model: TransformerSpec
    demand: Demand
    slo: Slo = field(default_factory=Slo)
    site: Site = field(default_factory=Site)
    prices: Prices = field(default_factory=default_prices)
    space: SearchSpace = field(default_factory=SearchSpace)
    objective: str = "cost"  # cost | energy | carbon: what the chosen plan minimises
    facility_step_s: float = 3600.0
    facility_days: float = 365.0

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; allowed: {', '.join(OBJECTIVES)}")


#: What the chosen plan can minimise, and the evaluation field it reads.
OBJECTIVES = {"cost": "cost_usd_per_mtok", "energy": "wall_j_per_token", "carbon": "carbon_g_per_token"}
