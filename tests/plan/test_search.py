import numpy as np
import pytest

from joulepath.plan import PlanInputs
from joulepath.plan.curves import knee_index
from joulepath.plan.output import plan_dict
from joulepath.plan.search import FRONT_AXES, candidates, plan


def _dominates(a: object, b: object) -> bool:
    xa = [s * getattr(a, n) for n, s in FRONT_AXES]
    xb = [s * getattr(b, n) for n, s in FRONT_AXES]
    return all(p <= q for p, q in zip(xa, xb, strict=True)) and any(p < q for p, q in zip(xa, xb, strict=True))


def test_plan_front_choice_curves_and_json(inputs_70b: PlanInputs) -> None:
    p = plan(inputs_70b)
    assert len(p.evaluations) == len(candidates(inputs_70b)) == 2 * 2 * 2 * 2 * 2 * 2 * 2
    ok = [e for e in p.evaluations if e.feasible]
    assert ok and p.front
    for e in p.front:  # nothing beats a front member on every axis
        assert not any(_dominates(o, e) for o in ok)
    for e in ok:  # every feasible candidate off the front is beaten by someone
        if e not in p.front:
            assert any(_dominates(o, e) for o in ok)
    assert p.chosen is not None
    assert p.chosen.cost_usd_per_mtok == min(e.cost_usd_per_mtok for e in ok)
    assert p.reasons[0].startswith("least cost_usd_per_mtok")
    acc = p.curves[0]
    assert acc.x_label == "accelerators" and list(acc.x) == sorted(acc.x)
    assert acc.tokens_per_s[-1] == pytest.approx(inputs_70b.demand.mean_tokens_per_s)  # twice the fleet: all served
    assert acc.tokens_per_s[0] < acc.tokens_per_s[-1]
    d = plan_dict(p)
    assert d["chosen"]["accelerator"] == p.chosen.candidate.accelerator and d["feasible"] == len(ok)


def test_energy_objective_picks_the_least_wall_energy(inputs_70b: PlanInputs) -> None:
    import dataclasses

    p = plan(dataclasses.replace(inputs_70b, objective="energy"))
    assert p.chosen is not None
    assert p.chosen.wall_j_per_token == min(e.wall_j_per_token for e in p.evaluations if e.feasible)


def test_knee_is_where_the_curve_flattens() -> None:
    x = np.arange(1.0, 11.0)
    assert knee_index(x, np.minimum(x, 4.0)) == 3
    assert knee_index(x, x) == 0  # a straight line has no knee
