"""The search: every candidate of the grid evaluated, the Pareto front, the chosen plan with its reasons,
where phase-splitting pays, and diminishing-returns curves with the knee marked.

    >>> from joulepath.hw import get_model_preset
    >>> from joulepath.plan.inputs import Demand, SearchSpace
    >>> space = SearchSpace(accelerators=("h100-sxm",), tensor_parallel=(1,), batch_caps=(64,), power_cap_fracs=(1.0,))
    >>> p = plan(PlanInputs(get_model_preset("llama-3.1-8b"), Demand.flat(5000.0, 1000, 250), space=space))
    >>> p.chosen is not None
    True
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from joulepath.plan.curves import Curve, diminishing_returns
from joulepath.plan.evaluate import Candidate, Evaluation, evaluate
from joulepath.plan.inputs import OBJECTIVES, PlanInputs

#: Front objectives: (Evaluation field, +1 minimise / -1 maximise).
FRONT_AXES = (
    ("cost_usd_per_mtok", 1.0),
    ("wall_j_per_token", 1.0),
    ("carbon_g_per_token", 1.0),
    ("slo_headroom_frac", -1.0),
)


def candidates(inputs: PlanInputs) -> list[Candidate]:
    """The grid of the search space times the site's cooling designs, in a fixed order."""
    s = inputs.space
    grid = itertools.product(
        s.accelerators, s.tensor_parallel, s.batch_caps, s.precisions, s.power_cap_fracs, s.phase_split,
        inputs.site.cooling_presets,
    )  # fmt: skip
    return [Candidate(*point) for point in grid]


def pareto_front(evals: list[Evaluation]) -> list[Evaluation]:
    """Feasible evaluations no other feasible one beats on every `FRONT_AXES` objective (ties kept),
    sorted by cost per million tokens."""
    ok = [e for e in evals if e.feasible]
    if not ok:
        return []
    x = np.array([[sign * getattr(e, name) for name, sign in FRONT_AXES] for e in ok])  # (n, 4), lower is better
    dominated = np.zeros(len(ok), dtype=bool)
    for i in range(len(ok)):
        beats = np.all(x <= x[i], axis=1) & np.any(x < x[i], axis=1)
        dominated[i] = bool(beats.any())
    front = [e for e, d in zip(ok, dominated, strict=True) if not d]
    return sorted(front, key=lambda e: e.cost_usd_per_mtok)


def choose(evals: list[Evaluation], objective: str) -> tuple[Evaluation | None, list[str]]:
    """The feasible candidate of least `objective` (ties: more SLO headroom), and why, in sentences."""
    field = OBJECTIVES[objective]
    ok = sorted((e for e in evals if e.feasible), key=lambda e: (getattr(e, field), -e.slo_headroom_frac))
    if not ok:
        return None, [f"no candidate is feasible; rejections by kind: {dict(rejections(evals))}"]
    best = ok[0]
    reasons = [f"least {field} of {len(ok)} feasible candidates ({len(evals)} evaluated)"]
    if len(ok) > 1:
        second = ok[1]
        gap = getattr(second, field) / getattr(best, field) - 1.0
        reasons.append(f"next best {second.candidate.label} is {gap:+.1%} on {field}")
    reasons.append(_binding(best))
    same_but_split = [e for e in ok if e.candidate == _flip_split(best.candidate)]
    if same_but_split:
        other = same_but_split[0]
        reasons.append(
            f"the same design {'co-located' if best.candidate.phase_split else 'phase-split'} costs "
            f"{other.cost_usd_per_mtok / best.cost_usd_per_mtok - 1:+.1%} per token"
        )
    return best, reasons


def _flip_split(c: Candidate) -> Candidate:
    return Candidate(
        c.accelerator, c.tensor_parallel, c.batch_cap, c.precision, c.power_cap_frac, not c.phase_split, c.cooling
    )


def _binding(e: Evaluation) -> str:
    return (
        f"{e.n_devices} x {e.candidate.accelerator} in {e.racks} racks ({e.rack_form}), "
        f"{e.design_facility_mw:.2f} MW design; SLO headroom {e.slo_headroom_frac:.0%} "
        f"(p99 TPOT {e.tpot_p99_s * 1e3:.1f} ms, p99 TTFT {e.ttft_p99_s:.2f} s)"
    )


def rejections(evals: list[Evaluation]) -> Counter[str]:
    """How many candidates failed for each kind of reason (the text before the first colon)."""
    return Counter(e.reason.split(":", 1)[0] for e in evals if not e.feasible)


@dataclass(frozen=True)
class SplitFinding:
    """Where phase-splitting pays: pairs of otherwise identical feasible designs, split vs co-located."""

    pairs: int  # both feasible
    split_cheaper: int
    split_only_feasible: int  # the co-located twin failed (usually the TPOT SLO) and the split one did not
    median_cost_ratio: float  # split / co-located cost per token over `pairs`
    best_split_vs_best_colocated: float  # cost ratio of the cheapest split to the cheapest co-located design


def split_finding(evals: list[Evaluation]) -> SplitFinding:
    by = {e.candidate: e for e in evals}
    pairs, only = [], 0
    for c, e in by.items():
        if not c.phase_split:
            continue
        other = by.get(_flip_split(c))
        if other is None:
            continue
        if e.feasible and other.feasible:
            pairs.append(e.cost_usd_per_mtok / other.cost_usd_per_mtok)
        elif e.feasible:
            only += 1
    best = {
        s: min((e.cost_usd_per_mtok for e in evals if e.feasible and e.candidate.phase_split == s), default=math.nan)
        for s in (True, False)
    }
    median = float(np.median(pairs)) if pairs else math.nan
    return SplitFinding(len(pairs), sum(r < 1.0 for r in pairs), only, median, best[True] / best[False])


@dataclass(frozen=True)
class Plan:
    """The planner's answer. `evaluations` holds every candidate, feasible or not."""

    inputs: PlanInputs
    evaluations: list[Evaluation]
    front: list[Evaluation]
    chosen: Evaluation | None
    reasons: list[str]
    split: SplitFinding
    curves: list[Curve]


def plan(inputs: PlanInputs) -> Plan:
    """Search the space, evaluate every candidate, and answer."""
    evals = [evaluate(c, inputs) for c in candidates(inputs)]
    chosen, reasons = choose(evals, inputs.objective)
    curves = diminishing_returns(chosen, inputs) if chosen else []
    return Plan(inputs, evals, pareto_front(evals), chosen, reasons, split_finding(evals), curves)
