"""Profiler benchmark: how much of a served run the hot-path profiler attributes to named classes, and
what profiling costs, against the same requests served without it (baseline) in the same run.

Workload: golden dev prompts of every skill and level on a zoo model (lookup prompts share documents,
so the prefix-caching advice has something to find). `--quick` serves fewer prompts.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from joulepath.bench.common import machine, write_result
from joulepath.model import load_model
from joulepath.profile import profile_engine
from joulepath.quality import golden
from joulepath.quality.tasks import chat_prompt
from joulepath.results import HotPathProfile


def run(model: str, per_cell: int, repeats: int) -> tuple[HotPathProfile, dict[str, Any]]:
    loaded = load_model(model)
    prompts = [chat_prompt(e) for e in golden.load("dev", per_cell=per_cell)]
    prof = profile_engine(loaded, prompts, repeats=repeats)
    result = {
        "benchmark": "profile",
        "machine": machine(),
        "model": model,
        "requests": len(prompts),
        "attributed_fraction": prof.attributed_fraction,
        "overhead_fraction": prof.overhead_fraction,
        "wall_s": prof.wall_s,
        "steps": prof.steps,
        "limits": asdict(prof.limits),
        "classes": [asdict(c) for c in prof.classes],
        "advice": [a.line() for a in prof.advice],
        "energy_provenance": prof.energy_provenance,
    }
    return prof, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 prompts per skill and level, one repeat")
    parser.add_argument("--model", default="jp-large")
    args = parser.parse_args(argv)
    prof, result = run(args.model, 2 if args.quick else 8, 1 if args.quick else 3)
    base = prof.wall_s / (1 + prof.overhead_fraction)
    print(
        f"{result['requests']} requests on {args.model}: plain {base:.2f} s, profiled {prof.wall_s:.2f} s "
        f"(ratio {1 + prof.overhead_fraction:.3f}; overhead {100 * prof.overhead_fraction:+.1f} %, goal <= 3 %)"
    )
    print(f"attributed to named classes: {100 * prof.attributed_fraction:.1f} % (goal >= 90 %)")
    for c in prof.classes[:6]:
        print(f"  {c.name:22s} {100 * c.share:5.1f} %  {c.bound}")
    print(f"wrote {write_result('profile', result)}")
    return 0
