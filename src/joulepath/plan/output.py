"""A plan as JSON-ready data (`joulepath plan --json`) and as short lines for a terminal."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from joulepath.plan.evaluate import Evaluation
from joulepath.plan.search import Plan, rejections

#: Evaluation fields that go into JSON (all of them but the candidate, flattened separately).
_FIELDS = [f.name for f in dataclasses.fields(Evaluation) if f.name != "candidate"]


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def evaluation_dict(e: Evaluation) -> dict[str, Any]:
    """A flat row: the candidate's fields, then the outcome's (non-finite numbers as null)."""
    row: dict[str, Any] = dataclasses.asdict(e.candidate)
    row |= {name: _clean(getattr(e, name)) for name in _FIELDS}
    row["feasible"] = e.feasible
    return row


def plan_dict(p: Plan, all_candidates: bool = False) -> dict[str, Any]:
    """The plan for `--json`: inputs in brief, chosen plan and reasons, front, curves, split finding."""
    inp = p.inputs
    return {
        "provenance": "estimated: joulepath.hw roofline model (H100-calibrated) + facility twin; "
        f"prices: plan/data/prices.toml ({inp.prices.table_date}, reported/assumed per entry); "
        f"demand: {inp.demand.source}",
        "model": inp.model.name,
        "objective": inp.objective,
        "slo": dataclasses.asdict(inp.slo),
        "site": dataclasses.asdict(inp.site),
        "demand_peak_tokens_per_s": inp.demand.peak_tokens_per_s,
        "demand_mean_tokens_per_s": inp.demand.mean_tokens_per_s,
        "evaluated": len(p.evaluations),
        "feasible": sum(e.feasible for e in p.evaluations),
        "rejected_by_reason": dict(rejections(p.evaluations)),
        "chosen": evaluation_dict(p.chosen) if p.chosen else None,
        "reasons": p.reasons,
        "pareto_front": [evaluation_dict(e) for e in p.front],
        "phase_split": {k: _clean(v) for k, v in dataclasses.asdict(p.split).items()},
        "diminishing_returns": [dataclasses.asdict(c) | {"knee_x": c.knee_x} for c in p.curves],
        **({"candidates": [evaluation_dict(e) for e in p.evaluations]} if all_candidates else {}),
    }


def summary_lines(p: Plan, front_rows: int = 8) -> list[str]:
    """What a terminal shows: the chosen plan, its reasons, the front's head, the split finding, knees."""
    lines = [f"{len(p.evaluations)} candidates, {sum(e.feasible for e in p.evaluations)} feasible; "
             f"rejected: {dict(rejections(p.evaluations))}"]  # fmt: skip
    if p.chosen is None:
        return [*lines, *p.reasons]
    c = p.chosen
    lines += [
        f"chosen: {c.candidate.label}",
        f"  {c.cost_usd_per_mtok:.3f} USD/Mtok, {c.wall_j_per_token:.3f} J/token at the wall, "
        f"{c.carbon_g_per_token * 1e3:.3f} mg CO2/token, PUE {c.pue:.2f} (estimated)",
        *(f"  - {r}" for r in p.reasons),
        f"Pareto front ({len(p.front)}; cost, wall energy, carbon, SLO headroom), cheapest first:",
        *(
            f"  {e.candidate.label:<48} {e.cost_usd_per_mtok:7.3f} USD/Mtok {e.wall_j_per_token:6.3f} J/tok "
            f"headroom {e.slo_headroom_frac:4.0%}"
            for e in p.front[:front_rows]
        ),
    ]
    s = p.split
    lines.append(
        f"phase split: cheaper in {s.split_cheaper} of {s.pairs} pairs where both meet the SLOs "
        f"(median cost ratio {s.median_cost_ratio:.2f}); feasible only when split: {s.split_only_feasible}; "
        f"best split / best co-located cost: {s.best_split_vs_best_colocated:.2f}"
    )
    lines += [
        f"knee: {cv.x_label} {cv.knee_x:.3g} ({cv.tokens_per_s[cv.knee_index]:.0f} tokens/s served)" for cv in p.curves
    ]
    return lines
