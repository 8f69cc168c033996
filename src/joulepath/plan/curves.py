"""Diminishing returns: served tokens/s and tokens per wall-joule as the chosen design gets more
accelerators (or, the same fleets read by their design power, more megawatts), with the knee marked.

The knee is Kneedle's (Satopaa et al., ICDCS workshops 2011): both axes scaled to [0, 1], the point
farthest above the straight line from the first point to the last. Beyond it, each added accelerator
buys less served demand than the average one before it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from joulepath.plan.evaluate import Pools, board_power_per_bin_w, deployment_of, model_spec, size_pools
from joulepath.plan.site import design_ratio

if TYPE_CHECKING:
    from joulepath.plan.evaluate import Evaluation
    from joulepath.plan.inputs import PlanInputs

CURVE_POINTS = 24


@dataclass(frozen=True)
class Curve:
    """One diminishing-returns curve. Values estimated (hardware model; wall = board x the chosen plan's
    facility-to-board ratio from its twin year)."""

    x_label: str  # "accelerators" | "design facility MW"
    x: tuple[float, ...]
    tokens_per_s: tuple[float, ...]  # served, mean over the day
    tokens_per_wall_j: tuple[float, ...]
    knee_index: int

    @property
    def knee_x(self) -> float:
        return self.x[self.knee_index]


def knee_index(x: np.ndarray, y: np.ndarray) -> int:
    """Kneedle's knee of an increasing, concave curve (0 when the curve is flat or too short).

    >>> knee_index(np.array([1.0, 2, 3, 4, 5]), np.array([1.0, 2, 3, 3, 3]))
    2
    """
    if len(x) < 3 or y[-1] == y[0] or x[-1] == x[0]:
        return 0
    xn, yn = (x - x[0]) / (x[-1] - x[0]), (y - y[0]) / (y[-1] - y[0])
    return int(np.argmax(yn - xn))


def _served_tokens_per_s(pools: Pools, demand_tps: np.ndarray, output: float, prompt: float) -> np.ndarray:
    cap = pools.n_decode_units * pools.decode.curve.capacity_tokens_per_s
    if pools.prefill is not None:
        cap = min(cap, pools.n_prefill_units * pools.prefill.prompt_tokens_per_s * output / prompt)
    return np.minimum(demand_tps, cap)


def diminishing_returns(chosen: Evaluation, inputs: PlanInputs) -> list[Curve]:
    """Both curves for the chosen design, from one decode unit up to twice the chosen fleet."""
    c, demand, host_w = chosen.candidate, inputs.demand, inputs.site.host_w_per_device
    spec, dep = model_spec(inputs.model, c.precision), deployment_of(c)
    pools = size_pools(c, spec, dep, demand)
    units = np.unique(np.geomspace(1, 2 * pools.n_decode_units, CURVE_POINTS).round().astype(int))
    prefill_per_decode = pools.n_prefill_units / pools.n_decode_units
    ratio = design_ratio(c.cooling, inputs.site.climate, inputs.site.grid_region)
    devices, mw, tps, tpj = [], [], [], []
    for n in units:
        p = dataclasses.replace(pools, n_decode_units=int(n), n_prefill_units=math.ceil(n * prefill_per_decode))
        served = _served_tokens_per_s(p, np.array(demand.tokens_per_s), demand.output_tokens, demand.prompt_tokens)
        scaled = dataclasses.replace(demand, tokens_per_s=tuple(float(v) for v in served))
        board = board_power_per_bin_w(p, scaled, dep, host_w)
        n_dev = (p.n_decode_units + p.n_prefill_units) * dep.n_devices
        devices.append(float(n_dev))
        mw.append(n_dev * (dep.power_ceiling_w + host_w) * ratio / 1e6)
        tps.append(float(served.mean()))
        tpj.append(float(served.mean() / (board.mean() * chosen.wall_per_board)))
    out = []
    for label, x in (("accelerators", devices), ("design facility MW", mw)):
        out.append(Curve(label, tuple(x), tuple(tps), tuple(tpj), knee_index(np.array(x), np.array(tps))))
    return out
