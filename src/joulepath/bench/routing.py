"""Routing benchmark: always-large, always-small, the oracle, the router (threshold and cost-aware), and the
cascade on the golden test split, all from one run.

Both tiers (jp-small, jp-large) serve the dev and the test split with continuous batching; every answer
is checked against its golden answer and every request's joules come from the engine's per-step meter
windows (the ledger's rule). The router's correctness model and every threshold are fitted on the fitting
split: golden dev's second half of each cell (the main job serves the first) and `FIT_GENERATED` fresh
requests per cell from the suite's generators (`fitting_traffic`: labelled traffic as a deployment would log
it, no golden text among it; with 20 per cell the out-of-fold accuracy curve moved by whole requests and the
knob's target could not be met at any knob). The knob keeps `TARGET` (99.5 %) of always-large accuracy there:
half of the headline's 1-point budget, the other half left to the weight lever. The policies are then applied
to the test split's requests, each request costing what its tier(s) measured for it — the small tier's joules
are counted for an escalated request too; the shipped router's gate on test is issue 17's 99 % (`GOAL`).

`python benchmarks/routing.py [--quick] [--minilm] [--write-router]` writes `benchmarks/results/routing.json`
(and, with `--write-router`, the router `joulepath run` ships with).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from joulepath.bench.common import machine, write_result
from joulepath.engine import Engine, EngineConfig, SamplingParams
from joulepath.model import LoadedModel, load_model
from joulepath.quality import golden, tasks
from joulepath.quality.tasks import LEVELS, SKILLS, Example, chat_prompt, check
from joulepath.serving.frontend import Arrival, Frontend, Request, Tiers
from joulepath.serving.router import (
    Cascade,
    Router,
    choose_c,
    confidence,
    model_sha256,
    request_features,
    router_path,
    save_router,
    tune_cascade,
    tune_router,
)
from joulepath.workload import SyntheticParams, generate

TIERS = ("jp-small", "jp-large")
GOAL = 0.99  # issue 17: >= 60 % on the small tier at >= 99 % of always-large accuracy (test split)
TARGET = 0.995  # the knob's target on the fitting split: half of the headline's 1-point budget (~0.4 points at
# jp-large's ~80 %), leaving the other half to the weight lever, whose gate measured -0.4 points (int8_vnni)
MAX_TOKENS = 40
FIT_SKIP = golden.SERVED_PER_CELL  # fitted on each dev cell's examples after the ones the main job serves
FIT_SEED = 20261128  # generated fitting traffic: the suite's generators on a seed neither golden split uses
FIT_GENERATED = 100  # generated fitting requests per skill and level, beside golden dev's 20


@dataclass(frozen=True)
class Served:
    """One split served on one tier: per request, correct, joules, output tokens, mean log-probability."""

    correct: np.ndarray
    energy_j: np.ndarray
    tokens: np.ndarray
    mean_logprob: np.ndarray
    prompt_tokens: np.ndarray
    provenance: str
    seconds: float


def judged_texts() -> set[str]:
    """Request texts the router must never be fitted on: the golden test split (its gate) and each golden dev
    cell's first `FIT_SKIP` (what the main job serves)."""
    return {e.user_text for e in golden.load("test")} | {e.user_text for e in golden.load("dev", per_cell=FIT_SKIP)}


def fitting_split(golden_per_cell: int, generated_per_cell: int) -> list[Example]:
    """The router's fitting requests: golden dev's examples after the first `FIT_SKIP` of each cell, less any
    whose text is also a judged request (lookup questions share 4 documents per level and the easy cells have
    small spaces: 21 served and 8 test requests had a twin there), then `fitting_traffic`."""
    judged = judged_texts()
    dev = [e for e in golden.load("dev", per_cell=golden_per_cell, skip_per_cell=FIT_SKIP) if e.user_text not in judged]
    return dev + fitting_traffic(generated_per_cell)


def fitting_traffic(per_cell: int, seed: int = FIT_SEED) -> list[Example]:
    """`per_cell` fresh requests per skill and level from the task suite's generators (lookup with a document
    of its own), none whose text equals a golden request of either split (so nothing judged is fitted on):
    labelled traffic to fit the router on, as a deployment would log it."""
    seen = {e.user_text for split in golden.SEEDS for e in golden.load(split)}
    rng = random.Random(seed)
    out: list[Example] = []
    for level in LEVELS:
        for skill in SKILLS:
            cell: list[Example] = []
            for _ in range(100 * per_cell):  # easy cells have small spaces: skip repeats, never loop forever
                if len(cell) == per_cell:
                    break
                ex = tasks.generate(skill, level, rng)
                if ex.user_text not in seen:
                    seen.add(ex.user_text)
                    cell.append(ex)
            out += cell
    return out


def serve(model: str, examples: list[Example]) -> Served:
    loaded = load_model(model)
    engine = Engine(loaded, EngineConfig(max_batch=16, track_logprobs=True))
    t0 = time.perf_counter()
    done = engine.generate([chat_prompt(e) for e in examples], SamplingParams(max_tokens=MAX_TOKENS, stop=("<|end|>",)))
    seconds = time.perf_counter() - t0
    records = [d.record for d in done]
    return Served(
        np.array([check(e, d.text) for e, d in zip(examples, done, strict=True)]),
        np.array([r.energy_j for r in records]),
        np.array([r.output_tokens for r in records]),
        np.array([confidence(r.logprob_sum, r.output_tokens) for r in records]),
        np.array([r.prompt_tokens for r in records]),
        records[0].energy_provenance if records else "none",
        seconds,
    )


def policy_row(
    name: str, to_small: np.ndarray, small: Served, large: Served, escalated: np.ndarray | None = None
) -> dict[str, Any]:
    """Accuracy, small-tier share and joules per correct answer of sending `to_small` to the small tier
    (and, for a cascade, `escalated` ones on to the large tier after the small tier answered)."""
    escalated = np.zeros_like(to_small) if escalated is None else escalated
    answered_small = to_small & ~escalated
    correct = np.where(answered_small, small.correct, large.correct)
    energy = np.where(to_small, small.energy_j, 0.0) + np.where(~answered_small, large.energy_j, 0.0)
    n_correct = int(correct.sum())
    return {
        "policy": name, "accuracy": float(correct.mean()), "small_tier_share": float(answered_small.mean()),
        "escalated_share": float(escalated.mean()), "energy_j": float(energy.sum()),
        "wasted_small_j": float(small.energy_j[escalated].sum()),
        "joules_per_correct": float(energy.sum()) / n_correct if n_correct else float("inf"),
    }  # fmt: skip


def evaluate(
    dev: dict[str, Served], test: dict[str, Served], f_dev: dict[str, np.ndarray], f_test: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Every policy on the test split, tuned on the fitting split; `f_*`: features by kind (the first
    kind's routers are the ones returned)."""
    s, lg = TIERS
    j_req = (float(dev[s].energy_j.mean()), float(dev[lg].energy_j.mean()))
    n = len(test[s].correct)
    rows = [policy_row("always-large", np.zeros(n, bool), test[s], test[lg]),
            policy_row("always-small", np.ones(n, bool), test[s], test[lg]),
            policy_row("oracle", test[s].correct | ~test[lg].correct, test[s], test[lg])]  # fmt: skip
    knobs: dict[str, float] = {}
    routers: dict[str, Router] = {}
    for kind in f_dev:
        suffix = "" if kind == "ngrams" else f", {kind}"
        c = choose_c(f_dev[kind], {s: dev[s].correct, lg: dev[lg].correct})  # once per kind, for both policies
        knobs[f"c{suffix.replace(', ', '_')}"] = c
        for policy in ("threshold", "cost_aware"):
            router = tune_router(f_dev[kind], dev[s].correct, dev[lg].correct, TIERS, j_req, policy, TARGET, kind, c)
            to_small = np.array([r.tier == s for r in router.route(f_test[kind])])
            rows.append(policy_row(f"router ({policy}{suffix})", to_small, test[s], test[lg]))
            knobs[f"router_{policy}{suffix.replace(', ', '_')}"] = router.knob
            routers.setdefault(policy, router)
    cascade = tune_cascade(dev[s].mean_logprob, dev[s].correct, dev[lg].correct, TARGET)
    rows.append(
        policy_row("cascade", np.ones(n, bool), test[s], test[lg], test[s].mean_logprob < cascade.min_mean_logprob)
    )
    knobs["cascade_min_mean_logprob"] = cascade.min_mean_logprob
    return {"rows": rows, "knobs": knobs, "j_per_request_dev": j_req, "router": routers["cost_aware"],
            "cascade": cascade}  # fmt: skip


def online(
    examples: list[Example], router: Router, cascade: Cascade, replay_s: float, repeats: int = 3
) -> list[dict[str, Any]]:
    """The test requests at Azure-shaped arrival times (the generator fitted to the Azure conversation
    trace, compressed into `replay_s`) through the serving Frontend: always-large, the router and the
    cascade, served `repeats` times interleaved (A B C A B C ...), each with the meter's window over its
    whole replay (idle and both tiers included). Joules per correct answer: the median repetition, and
    the ratio to always-large as the median and min-max of the paired repetitions."""
    trace = generate(SyntheticParams(), 3600.0, seed=7)
    at_s = trace.arrival_s[: len(examples)] - trace.arrival_s[0]
    at_s = at_s * (replay_s / max(float(at_s[-1]), 1e-9))
    small, large = load_model(TIERS[0]), load_model(TIERS[1])
    params = SamplingParams(max_tokens=MAX_TOKENS, stop=("<|end|>",))
    arrivals = [Arrival(float(t), Request(chat_prompt(e), params, request_id=f"r{k}", user_text=e.user_text))
                for k, (t, e) in enumerate(zip(at_s, examples, strict=True))]  # fmt: skip
    setups: dict[str, Callable[[], Frontend]] = {
        "always-large (online)": lambda: Frontend(Engine(large, EngineConfig(max_batch=16))),
        "router (cost_aware, online)": lambda: _tiered(small, large, router, None),
        "cascade (online)": lambda: _tiered(small, large, None, cascade),
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in setups}
    for _ in range(repeats):
        for name, make in setups.items():
            result = make().replay(arrivals)
            by_id = {r.request_id: r for r in result.responses}
            correct = [check(e, by_id[f"r{k}"].text) for k, e in enumerate(examples)]
            on_small = sum(by_id[f"r{k}"].tier == TIERS[0] for k in range(len(examples)))
            runs[name].append({"policy": name, "accuracy": float(np.mean(correct)),
                               "small_tier_share": on_small / len(examples), "energy_j": result.energy_j,
                               "joules_per_correct": result.energy_j / max(sum(correct), 1), "wall_s": result.wall_s,
                               "energy_provenance": result.energy_provenance})  # fmt: skip
    base = runs["always-large (online)"]
    rows = []
    for reps in runs.values():
        ratios = sorted(b["joules_per_correct"] / r["joules_per_correct"] for b, r in zip(base, reps, strict=True))
        median = sorted(reps, key=lambda r: r["joules_per_correct"])[len(reps) // 2]
        rows.append(median | {"repeats": len(reps), "vs_large_median": ratios[len(ratios) // 2],
                              "vs_large_low": ratios[0], "vs_large_high": ratios[-1],
                              "joules_per_correct_runs": [r["joules_per_correct"] for r in reps]})  # fmt: skip
    return rows


def _tiered(small: LoadedModel, large: LoadedModel, router: Router | None, cascade: Cascade | None) -> Frontend:
    engines = Engine(small, EngineConfig(max_batch=16, track_logprobs=True)), Engine(large, EngineConfig(max_batch=16))
    return Frontend(engines[0], tiers=Tiers(TIERS[0], ((TIERS[1], engines[1]),), router, cascade))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 example per skill and level per split")
    parser.add_argument("--per-cell", type=int, default=20, help="golden examples per skill and level per split")
    parser.add_argument("--fit-generated", type=int, default=FIT_GENERATED,
                        help="generated fitting requests per skill and level, beside golden dev's")  # fmt: skip
    parser.add_argument("--minilm", action="store_true", help="also route on MiniLM embeddings (offline rows)")
    parser.add_argument("--write-router", action="store_true",
                        help=f"ship the cost-aware router: write {router_path(*TIERS)}")  # fmt: skip
    args = parser.parse_args(argv)
    if args.write_router and (args.quick or args.per_cell < 20 or args.fit_generated < FIT_GENERATED):
        parser.error("--write-router ships the router with the zoo: fit and judge it on the full splits (no --quick, "
                     f"--per-cell >= 20, --fit-generated >= {FIT_GENERATED})")  # fmt: skip
    per_cell = 1 if args.quick else args.per_cell
    generated = 1 if args.quick else args.fit_generated
    splits = {"dev": fitting_split(per_cell, generated),
              "test": golden.load("test", per_cell=per_cell)}  # fmt: skip
    served = {name: {t: serve(t, ex) for t in TIERS} for name, ex in splits.items()}
    kinds = ("ngrams", "minilm") if args.minilm else ("ngrams",)
    features = {name: {k: request_features([e.user_text for e in ex], served[name][TIERS[0]].prompt_tokens.tolist(), k)
                       for k in kinds} for name, ex in splits.items()}  # fmt: skip
    result = evaluate(served["dev"], served["test"], features["dev"], features["test"])
    live = online(splits["test"], result["router"], result["cascade"], replay_s=2.0 if args.quick else 10.0)
    rows = {r["policy"]: r for r in result["rows"]}
    large, router, oracle = rows["always-large"], rows["router (cost_aware)"], rows["oracle"]
    best = router  # the policy declared before the test split is looked at: the one `joulepath run` ships
    print(
        f"golden test split, {len(splits['test'])} requests; policies tuned on {len(splits['dev'])} dev requests "
        f"(target: {TARGET:.1%} of always-large accuracy); energy {served['test'][TIERS[0]].provenance}"
    )
    print(f"{'policy':22} {'accuracy':>9} {'small share':>12} {'J/correct':>10} {'vs large':>9}")
    print("offline: each request costs what its tier(s) measured for it in batched serving of the split")
    for r in result["rows"]:
        ratio = large["joules_per_correct"] / r["joules_per_correct"]
        print(f"{r['policy']:22} {100 * r['accuracy']:8.1f}% {100 * r['small_tier_share']:11.1f}% "
              f"{r['joules_per_correct']:10.3g} {ratio:8.2f}x")  # fmt: skip
    print("online: Azure-shaped arrivals through the Frontend; the meter's window over each whole replay")
    for r in live:
        lo, hi = r["vs_large_low"], r["vs_large_high"]
        note = " (spread includes 1.0: no significant difference)" if lo <= 1.0 <= hi and r is not live[0] else ""
        print(f"{r['policy']:28} {100 * r['accuracy']:8.1f}% {100 * r['small_tier_share']:11.1f}% "
              f"{r['joules_per_correct']:10.3g} {r['vs_large_median']:8.2f}x ({lo:.2f}-{hi:.2f}, "
              f"{r['repeats']} interleaved runs){note}")  # fmt: skip
    online_router = next(r for r in live if r["policy"].startswith("router"))
    out = {
        "online": live,
        "machine": machine(), "quick": args.quick, "requests_test": len(splits["test"]),
        "goal": GOAL, "tuning_target": TARGET,
        "shipped_policy": best["policy"], "small_tier_share": best["small_tier_share"],
        "accuracy_router": best["accuracy"], "accuracy_large": large["accuracy"],
        "accuracy_ratio_vs_large": best["accuracy"] / large["accuracy"] if large["accuracy"] else float("nan"),
        "joules_per_correct_vs_large": large["joules_per_correct"] / best["joules_per_correct"],
        "joules_per_correct_vs_large_online": online_router["vs_large_median"],
        "joules_per_correct_vs_large_online_spread": [online_router["vs_large_low"], online_router["vs_large_high"]],
        "oracle_small_share": oracle["small_tier_share"], "router_cost_aware_small_share": router["small_tier_share"],
        "policies": result["rows"], "knobs": result["knobs"], "j_per_request_dev": result["j_per_request_dev"],
        "energy_provenance": served["test"][TIERS[0]].provenance,
        "provenance": "accuracy measured (exact match on the golden test split); joules per request from the "
        "engine's meter windows shared by tokens; policies tuned on the dev split only",
    }  # fmt: skip
    share_ok = out["small_tier_share"] >= 0.6 and out["accuracy_ratio_vs_large"] >= GOAL
    goals = {
        "small_share_ge_60pct_at_99pct_accuracy": share_ok,
        "joules_per_correct_ge_2x": out["joules_per_correct_vs_large"] >= 2.0,
    }
    out["goals"] = goals
    if args.write_router:
        shipped = router
        prov = {
            "fitted_on": f"golden dev, examples {FIT_SKIP + 1}-{FIT_SKIP + per_cell} of each skill and level less any "
            f"whose text is a served or test request, and up to {generated} generated requests per skill and level "
            f"(seed {FIT_SEED}, no golden text among them); {len(splits['dev'])} requests served on both tiers",
            "judged_on": f"golden test ({len(splits['test'])})",
            "test_accuracy_ratio": shipped["accuracy"] / large["accuracy"] if large["accuracy"] else 0.0,
            "test_small_tier_share": shipped["small_tier_share"],
            "test_joules_per_correct_vs_large": large["joules_per_correct"] / shipped["joules_per_correct"],
            "target": GOAL, "tuning_target": TARGET, "date_utc": out["machine"]["date_utc"],
            "energy": served["dev"][TIERS[0]].provenance,
            "fit_skip_per_cell": FIT_SKIP, "max_tokens": MAX_TOKENS,
            "cascade_min_mean_logprob": result["cascade"].min_mean_logprob,
            **{f"weights_{t}": model_sha256(t) for t in TIERS},
        }  # fmt: skip
        save_router(result["router"], router_path(*TIERS), prov)
        print(f"wrote {router_path(*TIERS)} (cost-aware; {100 * prov['test_accuracy_ratio']:.1f} % of always-large "
              f"accuracy on test)")  # fmt: skip
    print(
        f"shipped policy, {best['policy']}: {100 * out['small_tier_share']:.1f} % on the small tier at "
        f"{100 * out['accuracy_ratio_vs_large']:.1f} % of always-large accuracy, "
        f"{out['joules_per_correct_vs_large']:.2f}x fewer J per correct answer; oracle small share "
        f"{100 * out['oracle_small_share']:.1f} %"
    )
    print("goals: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in goals.items()))
    print(f"wrote {write_result('routing', out)}")
    return 0
