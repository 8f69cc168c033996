"""The planner's choice against measured serving data (ML.ENERGY v3 configuration table).

For each model and task in the table, and each median-ITL target that at least one measured
configuration meets, the planner picks the configuration (GPU type, GPU count and layout, batch cap
`max_num_seqs`) of least predicted J/token among those it predicts meet the target, with the same unit
model it plans with (`plan.unit.operating_point`: the batch is the cap unless the KV cache fills the
memory first; the request shape is the task's calibrated mean prompt and the group's mean measured
output length). Its regret is the measured J/token of its pick over the measured optimum's, minus one.

The hardware model's efficiency factors were fitted on the table's H100 rows (`hw/data/calibration.toml`),
so H100 choices are in-sample for the model; B200 rows were never fitted.
"""

from __future__ import annotations

import csv
import functools
import math
import tomllib
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from joulepath.hw.calibration import MeasuredConfig, load_mlenergy
from joulepath.hw.perf import steady_state
from joulepath.plan.unit import operating_point

#: Median inter-token latency targets, seconds.
ITL_TARGETS_S = (0.010, 0.015, 0.020, 0.025, 0.030, 0.040, 0.050, 0.060, 0.075, 0.100, 0.150, 0.200)


@dataclass(frozen=True)
class Row:
    """A measured configuration with its batch cap and the planner's prediction for it."""

    config: MeasuredConfig
    batch_cap: int
    predicted_itl_s: float
    predicted_j_per_token: float


@dataclass(frozen=True)
class Case:
    """One (model, task, ITL target): the planner's pick against the measured best."""

    model_id: str
    task: str
    target_itl_s: float
    pick: Row
    best: Row
    predicted_feasible: bool  # the planner predicted some configuration meets the target

    @property
    def regret_frac(self) -> float:
        return self.pick.config.energy_per_token_j / self.best.config.energy_per_token_j - 1.0

    @property
    def exact(self) -> bool:
        return self.pick is self.best

    @property
    def pick_meets_target(self) -> bool:
        return self.pick.config.median_itl_s <= self.target_itl_s


@dataclass(frozen=True)
class Validation:
    """Summary over all cases. Regret in % of the measured optimum's J/token (measured both)."""

    cases: list[Case]
    median_regret_pct: float
    mean_regret_pct: float
    exact_pick_rate: float
    same_gpu_rate: float
    pick_meets_target_rate: float
    n_groups: int


@functools.cache
def calibrated_prompt_tokens() -> dict[str, float]:
    """Each task's mean prompt length as fitted with the shipped calibration (tokens)."""
    text = resources.files("joulepath.hw").joinpath("data", "calibration.toml").read_text(encoding="utf-8")
    return {k: float(v) for k, v in tomllib.loads(text)["prompt_tokens_by_task"].items()}


def _batch_caps(path: Path) -> list[int]:
    with path.open(newline="") as fh:
        return [int(r["max_num_seqs"]) for r in csv.DictReader(fh)]


def _predict(config: MeasuredConfig, cap: int, prompt: float, output: float) -> Row:
    assert config.spec is not None
    try:
        batch, _ = operating_point(config.spec, config.deployment, cap, prompt, output)
    except ValueError:  # hw.fleet counts weights once per data-parallel replica, also under expert
        batch = float(cap)  # parallelism, where vLLM shards experts over all GPUs: the run shows it fits
    s = steady_state(config.spec, config.deployment, batch, prompt, output)
    return Row(config, cap, s.itl_s, s.energy_per_output_token_j)


def load_groups(path: Path) -> dict[tuple[str, str], list[Row]]:
    """Transformer rows with the planner's predictions, grouped by (model id, task)."""
    configs, caps = load_mlenergy(path), _batch_caps(path)
    prompts = calibrated_prompt_tokens()
    by: dict[tuple[str, str], list[tuple[MeasuredConfig, int]]] = defaultdict(list)
    for c, cap in zip(configs, caps, strict=True):
        if c.spec is not None and c.task in prompts:
            by[(c.model_id, c.task)].append((c, cap))
    groups = {}
    for key, members in by.items():
        output = float(np.mean([c.output_tokens for c, _ in members]))
        groups[key] = [_predict(c, cap, prompts[key[1]], output) for c, cap in members]
    return groups


def _case(key: tuple[str, str], rows: list[Row], target_s: float, margin: float) -> Case | None:
    measured_ok = [r for r in rows if r.config.median_itl_s <= target_s]
    if not measured_ok:
        return None
    best = min(measured_ok, key=lambda r: r.config.energy_per_token_j)
    predicted_ok = [r for r in rows if r.predicted_itl_s <= margin * target_s]
    if predicted_ok:
        pick = min(predicted_ok, key=lambda r: r.predicted_j_per_token)
    else:  # nothing predicted to meet it: the planner's best effort is the fastest configuration
        pick = min(rows, key=lambda r: r.predicted_itl_s)
    return Case(key[0], key[1], target_s, pick, best, bool(predicted_ok))


def validate(path: Path, targets_s: tuple[float, ...] = ITL_TARGETS_S, margin: float = 1.0) -> Validation:
    """Every (model, task, target) case of the table; raises FileNotFoundError when `path` is absent.
    `margin` < 1 makes the planner aim its predicted ITL at `margin` x the target (a safety margin)."""
    groups = load_groups(path)
    cases = [c for key, rows in sorted(groups.items()) for t in targets_s if (c := _case(key, rows, t, margin))]
    if not cases:
        raise ValueError(f"{path}: no model meets any ITL target; nothing to validate")
    regrets = np.array([c.regret_frac for c in cases]) * 100.0
    return Validation(
        cases,
        float(np.median(regrets)),
        float(np.mean(regrets)),
        float(np.mean([c.exact for c in cases])),
        float(np.mean([c.pick.config.gpu == c.best.config.gpu for c in cases])),
        float(np.mean([c.pick_meets_target for c in cases])),
        len(groups),
    )


def summary(v: Validation) -> dict[str, float | int]:
    """The headline numbers (measured regret of the planner's picks), rounded for JSON. A pick that misses
    the target when measured can show negative regret (it saves energy by being slower), so the regret
    over picks that meet it, and by how much the others miss, are given too."""
    met = [c.regret_frac * 100.0 for c in v.cases if c.pick_meets_target]
    over = [(c.pick.config.median_itl_s / c.target_itl_s - 1) * 100.0 for c in v.cases if not c.pick_meets_target]
    return {
        "cases": len(v.cases),
        "groups": v.n_groups,
        "median_regret_pct": round(v.median_regret_pct, 2),
        "mean_regret_pct": round(v.mean_regret_pct, 2),
        "exact_pick_rate": round(v.exact_pick_rate, 3),
        "same_gpu_rate": round(v.same_gpu_rate, 3),
        "pick_meets_target_rate": round(v.pick_meets_target_rate, 3),
        "max_regret_pct": round(max((c.regret_frac for c in v.cases), default=math.nan) * 100.0, 1),
        "median_regret_pct_target_met": round(float(np.median(met)), 2) if met else math.nan,
        "mean_regret_pct_target_met": round(float(np.mean(met)), 2) if met else math.nan,
        "median_itl_overshoot_pct_target_missed": round(float(np.median(over)), 1) if over else 0.0,
    }
