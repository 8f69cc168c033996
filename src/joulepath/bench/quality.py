"""Quality benchmark: the zoo models on the held-out golden test split, the guardrails on the safety
set's held-out split (`--guard-only`: just those, in a minute), and DPO's effect on accuracy and
refusals, each against its baseline from the same run:

- models: jp-small (the cheap tier) vs jp-large, per level;
- guardrails: rules only (baseline) vs rules + semantic classifier (ours);
- alignment: the zoo model before DPO (baseline) vs after.

`--quick` evaluates fewer examples per cell and runs a shorter DPO (under a minute on 2 cores);
the full run is what RESULTS.md records.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from typing import Any

from joulepath.bench.common import machine, write_result
from joulepath.model import load_model
from joulepath.model.checkpoint import zoo_path
from joulepath.model.eagle import load_eagle
from joulepath.model.mtp import load_heads
from joulepath.quality import golden
from joulepath.quality.align import AlignConfig, align, behaviour, make_pairs
from joulepath.quality.evals import EvalReport, evaluate, mean_accepted_length, speculative_acceptance
from joulepath.quality.tasks import LEVELS
from joulepath.quality.zoo import TRAINING_FILE
from joulepath.results import wilson_interval
from joulepath.serving.guard import Guard, GuardPolicy, load_safety_set, safety_texts


def by_level(report: EvalReport) -> dict[str, float]:
    return {level: report.level_accuracy(level) for level in LEVELS if any(c.level == level for c in report.cells)}


def guard_rates(guard: Guard, rows: list[dict[str, str]]) -> dict[str, Any]:
    """Shares of unsafe rows blocked and of safe rows blocked, with counts and Wilson 95 % intervals."""
    decisions = guard.check_inputs([r["text"] for r in rows])
    unsafe = [d.blocked for r, d in zip(rows, decisions, strict=True) if r["label"] == "unsafe"]
    safe = [d.blocked for r, d in zip(rows, decisions, strict=True) if r["label"] == "safe"]
    return {
        "unsafe_block_rate": sum(unsafe) / len(unsafe),
        "safe_false_positive_rate": sum(safe) / len(safe),
        "unsafe_blocked": sum(unsafe),
        "unsafe": len(unsafe),
        "safe_blocked": sum(safe),
        "safe": len(safe),
        "unsafe_block_rate_ci95": wilson_interval(sum(unsafe), len(unsafe)),
        "safe_false_positive_rate_ci95": wilson_interval(sum(safe), len(safe)),
    }


def guard_latency_ms(guard: Guard, texts: list[str]) -> dict[str, float]:
    """Wall time of `check_input` per request, one request at a time as a server calls it (ms); the
    classifier is loaded first, so start-up is not counted."""
    guard.check_input(texts[0])
    times = []
    for text in texts:
        t0 = time.perf_counter()
        guard.check_input(text)
        times.append(1000 * (time.perf_counter() - t0))
    times.sort()
    return {
        "median": times[len(times) // 2],
        "p95": times[int(0.95 * (len(times) - 1))],
        "mean": sum(times) / len(times),
    }


def run_guard() -> dict[str, Any]:
    """The guardrails on the safety set's held-out split: rules only vs rules + classifier, and latency."""
    held_out = load_safety_set("test")
    rules_only, ours = Guard(GuardPolicy(semantic=False)), Guard()
    t0 = time.perf_counter()
    threshold = ours.semantic_threshold  # fits the classifier and cross-validates its threshold
    texts = [r["text"] for r in held_out]
    return {
        "rules_only": guard_rates(rules_only, held_out),
        "rules_and_semantic": guard_rates(ours, held_out),
        "semantic_threshold": threshold,  # chosen on the training split only
        "classifier_fit_s": time.perf_counter() - t0,
        "train_rows": len(load_safety_set("train")),
        "latency_ms": {
            "rules_only": guard_latency_ms(rules_only, texts),
            "rules_and_semantic": guard_latency_ms(ours, texts),
        },
    }


def run(quick: bool, dpo_model: str) -> dict[str, Any]:
    per_cell = 5 if quick else 40
    t0 = time.perf_counter()
    models: dict[str, dict[str, Any]] = {}
    for name in ("jp-small", "jp-large"):
        report = evaluate(load_model(name), golden.load("test", per_cell=per_cell))
        models[name] = {"accuracy": report.accuracy, "by_level": by_level(report), "seconds": report.seconds}
    easy_medium = {
        name: (m["by_level"]["easy"] + m["by_level"]["medium"]) / 2 for name, m in models.items()
    }  # cells are equal-sized, so the mean of the two levels is the accuracy on both
    large = load_model("jp-large")
    heads = load_heads(zoo_path("jp-large"))
    dev = evaluate(large, golden.load("dev", per_cell=2 if quick else 10))
    medusa_chain = mean_accepted_length(large, heads, dev) if heads is not None else None
    drafter = "eagle" if load_eagle(zoo_path("jp-large"), large.config) is not None else "mtp"
    served = speculative_acceptance(large, drafter, list(dev.examples)) if heads or drafter == "eagle" else None
    mtp_accepted = served["tokens_per_decode_step"] if served else None
    training = json.loads((zoo_path("jp-large") / TRAINING_FILE).read_text(encoding="utf-8"))
    held_out = load_safety_set("test")
    guard = run_guard()
    cfg = AlignConfig(steps=20 if quick else 150, task_prompts=100 if quick else 600)
    loaded = load_model(dpo_model)
    examples = golden.load("test", per_cell=5 if quick else 20)
    unsafe, safe = (list(texts) for texts in safety_texts("test"))
    forbidden = list(safety_texts("train")[0])
    before = behaviour(loaded, examples, unsafe, safe)
    pairs = make_pairs(loaded, cfg, forbidden)
    after = behaviour(align(loaded, pairs, cfg), examples, unsafe, safe)
    n_probe = 20 if quick else len(held_out)  # quick: the first 20 of each label
    shipped = behaviour(large, [], unsafe[:n_probe], safe[:n_probe])  # the shipped jp-large's own refusals
    return {
        "benchmark": "quality",
        "quick": quick,
        "machine": machine(),
        "examples_per_cell": per_cell,
        "models": models,
        "guard": guard,
        "dpo": {
            "model": dpo_model,
            "config": asdict(cfg),
            "pairs": len(pairs),
            "before": asdict(before),
            "after": asdict(after),
            "golden_examples": len(examples),
        },
        "jp_large_easy_medium_accuracy": easy_medium["jp-large"],
        "jp_small_easy_accuracy": models["jp-small"]["by_level"]["easy"],
        "jp_small_hard_accuracy": models["jp-small"]["by_level"]["hard"],
        "guard_unsafe_block_rate": guard["rules_and_semantic"]["unsafe_block_rate"],
        "guard_safe_false_positive_rate": guard["rules_and_semantic"]["safe_false_positive_rate"],
        "dpo_accuracy_delta": 100 * (after.accuracy - before.accuracy),  # percentage points
        "jp_large_hard_accuracy": models["jp-large"]["by_level"]["hard"],
        "jp_small_medium_hard_accuracy": (
            models["jp-small"]["by_level"]["medium"] + models["jp-small"]["by_level"]["hard"]
        )
        / 2,
        "mtp_mean_accepted": mtp_accepted,  # tokens per decode step, engine drafting k = 4, golden dev (measured)
        "mtp_drafter": drafter,  # the shipped drafter measured: eagle (model/eagle.py) where shipped, else mtp
        "mtp_medusa_chain_accepted": medusa_chain,  # Medusa heads, teacher-forced chain count on the same answers
        "aligned_unsafe_refusal_rate": shipped.refusal_unsafe,
        "aligned_safe_refusal_rate": shipped.refusal_safe,
        "train_tokens_per_s_gpu": training.get("tokens_per_s"),  # recorded when the weights were trained
        "train_gpu_busy_fraction": training.get("gpu_busy_fraction"),
        "train_provenance": f"measured:{training.get('machine', 'unknown')} at training time ({TRAINING_FILE})",
        "seconds": time.perf_counter() - t0,
    }


def report(r: dict[str, Any]) -> None:
    small, large = r["models"]["jp-small"]["by_level"], r["models"]["jp-large"]["by_level"]
    print(f"golden test split, {r['examples_per_cell']} per skill and level")
    print(f"{'level':8s} {'jp-small':>9s} {'jp-large':>9s} {'large/small':>12s}")
    for level in LEVELS:
        ratio = f"{large[level] / small[level]:11.2f}x" if small[level] else f"{'n/a':>12s}"
        print(f"{level:8s} {100 * small[level]:8.1f}% {100 * large[level]:8.1f}% {ratio}")
    report_guard(r["guard"])
    d = r["dpo"]
    print(f"DPO on {d['model']} ({d['pairs']} pairs): before -> after")
    for key, label in (
        ("accuracy", "golden accuracy"),
        ("refusal_unsafe", "refuses unsafe"),
        ("refusal_safe", "refuses safe"),
    ):
        print(f"  {label:16s} {100 * d['before'][key]:5.1f}% -> {100 * d['after'][key]:5.1f}%")
    print(f"  accuracy delta {r['dpo_accuracy_delta']:+.1f} points")
    print(
        f"shipped jp-large refuses {100 * r['aligned_unsafe_refusal_rate']:.1f}% of held-out unsafe and "
        f"{100 * r['aligned_safe_refusal_rate']:.1f}% of safe requests; its {r['mtp_drafter']} drafter gives "
        f"{r['mtp_mean_accepted'] or 0:.2f} tokens per decode step (measured here)"
    )
    print(
        f"training (recorded with the weights): {r['train_tokens_per_s_gpu'] or 0:,.0f} tokens/s, "
        f"GPU busy {100 * (r['train_gpu_busy_fraction'] or 0):.1f}% ({r['train_provenance']})"
    )


def report_guard(g: dict[str, Any]) -> None:
    base, ours = g["rules_only"], g["rules_and_semantic"]
    print(
        f"guardrails on the held-out safety split ({ours['unsafe']} unsafe, {ours['safe']} safe; "
        f"classifier threshold {g['semantic_threshold']:.3f} from cross-validation on {g['train_rows']} training rows)"
    )
    print("  rules only -> rules + semantic classifier (Wilson 95 % interval)")
    for rate, label in (("unsafe_block_rate", "unsafe blocked"), ("safe_false_positive_rate", "safe blocked")):
        lo, hi = ours[f"{rate}_ci95"]
        print(f"  {label:15s} {100 * base[rate]:5.1f}% -> {100 * ours[rate]:5.1f}% ({100 * lo:.1f}-{100 * hi:.1f}%)")
    rules, both = g["latency_ms"]["rules_only"], g["latency_ms"]["rules_and_semantic"]
    print(
        f"  check_input per request: median {rules['median']:.2f} -> {both['median']:.2f} ms, "
        f"p95 {rules['p95']:.2f} -> {both['p95']:.2f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 examples per cell and a 20-step DPO")
    parser.add_argument("--dpo-model", default="jp-small", help="zoo model or folder to align")
    parser.add_argument("--guard-only", action="store_true", help="only the guardrails (writes quality_guard.json)")
    args = parser.parse_args(argv)
    if args.guard_only:
        guard = run_guard()
        report_guard(guard)
        written = write_result("quality_guard", {"benchmark": "quality_guard", "machine": machine(), "guard": guard})
        print(f"wrote {written}")
        return 0
    result = run(args.quick, args.dpo_model)
    report(result)
    print(f"wrote {write_result('quality', result)}")
    return 0
