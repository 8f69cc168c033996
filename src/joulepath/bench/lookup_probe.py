"""Lookup probe (issue 12): does a small model of the zoo's family learn the golden lookup's key match?

jp-large answers a lookup question with *a* value of the document whatever key is asked: it learnt to copy
but not to match the asked key (benchmarks/RESULTS.md, the CPU probes under zoo_train_gpu). This trains a
~0.8 M-parameter model (d 128, 4 layers) on lookup alone through the shipped pipeline (`quality.train`,
`quality.shards`), once per arm, each arm a different training mix, same seed, model, schedule and token
count, in one run; then asks every arm's model golden-form questions ("What is the value of k1234?", four-
digit keys as in the golden sets) about fresh documents of 2, 4 and 12 lines, greedy, and scores:

- exact: the answer is the asked key's value;
- copied: the answer is one of the document's values (any key's);
- matched: exact / copied, the share of copied values that are the right one (chance: 1 / lines; none
  where nothing was copied).

A key match has been learnt where `matched` leaves chance; `copied` alone only says the model copies.
Arms are `NAME:ECHO:LO-HI[:PASSES]`: the share of documents asked in the echo form (`DataMix.lookup_echo`),
the keys' digit counts (`DataMix.lookup_key_digits`; 4-4 is the golden sets' keys) and, optionally, how many
times each packed row is seen (fewer distinct rows; default `--data-passes`).

    python benchmarks/lookup_probe.py                       # echo 0.5 vs echo 0.5 + keys of 1-4 digits
    python benchmarks/lookup_probe.py --quick               # the same two arms, 24 steps (49 s measured here)
    python benchmarks/lookup_probe.py --arm plain:0:1-4     # one arm of one's own
"""

from __future__ import annotations

import argparse
import math
import random
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from joulepath.bench.common import machine, write_result
from joulepath.model.checkpoint import zoo_path
from joulepath.quality.align import greedy
from joulepath.quality.tasks import chat_prompt, gen_lookup, make_document
from joulepath.quality.train import ZOO, TrainConfig, TrainState, train

PRESET = "lookup-probe"  # registered in quality.train.ZOO by this module, for its runs only
SHAPE = dict(d_model=128, n_layers=4, n_heads=4, n_kv_heads=4, d_ff=384)  # ~0.8 M parameters besides embedding
DEFAULT_ARMS = ("echo:0.5:4-4", "echo+short-keys:0.5:1-4")
EVAL_LINES = (2, 4, 12)


@dataclass(frozen=True)
class Arm:
    name: str
    echo: float
    key_digits: tuple[int, int]
    data_passes: float | None = None  # None: the run's --data-passes


def parse_arm(text: str) -> Arm:
    """`NAME:ECHO:LO-HI[:PASSES]`, e.g. `short-keys:0.5:1-4` or `few-rows:0.5:4-4:75`; a ValueError that says
    what was wrong otherwise (NAME: letters, digits, `+`, `-`, `_`; it names the arm's folder)."""
    parts = text.split(":")
    try:
        name, echo, digits, *passes = parts
        lo, hi = (int(d) for d in digits.split("-"))
        if not re.fullmatch(r"[A-Za-z0-9+_-]+", name) or len(passes) > 1 or (passes and not float(passes[0]) > 0):
            raise ValueError
        if not math.isfinite(float(echo)):
            raise ValueError
        return Arm(name, float(echo), (lo, hi), float(passes[0]) if passes else None)
    except ValueError:
        raise ValueError(f"an arm is NAME:ECHO:LO-HI[:PASSES] (e.g. short-keys:0.5:1-4), got {text!r}") from None


def register_preset() -> None:
    """The probe's shape among the trainer's presets (it builds models by preset name), for this process."""
    ZOO.setdefault(PRESET, SHAPE)


def probe_config(arm: Arm, steps: int, seed: int) -> TrainConfig:
    """The probe's schedule (the third CPU probe's: rows of 256 tokens, 8,192 tokens a step, lr 3e-3 with
    50 warm-up steps and a cosine to 10 %, documents of 2-4 lines asked 4 keys each) for one arm, its rows
    seen `arm.data_passes` times (1 where unset)."""
    rows_per_step, data_passes = 8192 // 256, arm.data_passes or 1.0
    register_preset()
    return TrainConfig(
        preset=PRESET,
        steps=steps,
        tokens_per_step=8192,
        seq_len=256,
        lr=3e-3,
        warmup_steps=min(50, steps // 4),
        data_rows=max(rows_per_step, int(steps * rows_per_step / data_passes)),
        data_workers=2,
        skills=("lookup",),
        safety_share=0.0,
        lookup_questions=4,
        lookup_lines=(2, 4),
        lookup_echo=arm.echo,
        lookup_key_digits=arm.key_digits,
        checkpoint_every=10**9,
        log_every=max(1, steps // 12),
        seed=seed,
    )


def golden_form_scores(folder: Path, docs: int, seed: int) -> dict[str, dict[str, float | None]]:
    """Greedy answers to golden-form questions on `docs` fresh documents per line count in EVAL_LINES."""
    from joulepath.model import load_model

    loaded = load_model(str(folder))
    out: dict[str, dict[str, float | None]] = {}
    for lines in EVAL_LINES:
        rng = random.Random(seed * 7919 + lines)
        examples = [gen_lookup(rng, "easy", (*make_document(rng, "easy", "doc", lines), "doc")) for _ in range(docs)]
        answers = [a.replace("<|end|>", "").strip() for a in greedy(loaded, [chat_prompt(e) for e in examples], 8)]
        exact = sum(a == e.answer for a, e in zip(answers, examples, strict=True))
        copied = sum(
            a in {line.split(": ", 1)[1] for line in e.document.splitlines()}
            for a, e in zip(answers, examples, strict=True)
        )
        out[str(lines)] = {
            "exact": exact / docs,
            "copied": copied / docs,
            "matched": exact / copied if copied else None,  # nothing copied: no share to take
            "chance_matched": 1 / lines,
        }
    return out


def run_arm(arm: Arm, steps: int, seed: int, docs: int, work: Path) -> dict[str, Any]:
    cfg = probe_config(arm, steps, seed)
    folder = work / arm.name
    folder.mkdir(parents=True)
    shutil.copy2(zoo_path("jp-large") / "tokenizer.json", folder / "tokenizer.json")  # the zoo's tokenizer
    log: list[dict[str, float]] = []

    def record(s: TrainState) -> None:
        log.append({"step": s.step, "lookup_answer_loss": s.skill_loss.get("lookup", float("nan"))})
        print(f"  {arm.name}: step {s.step}/{s.total_steps} answer loss {log[-1]['lookup_answer_loss']:.3f} "
              f"({s.tokens_per_s:,.0f} tokens/s)", flush=True)  # fmt: skip

    t0 = time.perf_counter()
    train(cfg, folder, record, device="cpu")
    train_s = time.perf_counter() - t0
    return {
        "arm": arm.name,
        "lookup_echo": arm.echo,
        "lookup_key_digits": list(arm.key_digits),
        "train_tokens": steps * cfg.tokens_per_step,
        "train_s": train_s,
        "data_rows": cfg.data_rows,
        "loss_log": log,
        "golden_form": golden_form_scores(folder, docs, seed),
    }


def report(r: dict[str, Any]) -> None:
    print(f"\ngolden-form lookup answers, {r['eval_docs']} fresh documents per length (measured, greedy)")
    print(f"{'arm':<24}{'lines':>6}{'exact':>9}{'copied':>9}{'matched':>9}{'chance':>8}{'vs first arm':>15}")
    first = r["arms"][0]
    for a in r["arms"]:
        for n in EVAL_LINES:
            g, b = a["golden_form"][str(n)], first["golden_form"][str(n)]["exact"]
            ratio = "" if a is first else (f"{g['exact'] / b:.2f}x exact" if b else "(first 0 %)")
            matched = "-" if g["matched"] is None else f"{100 * g['matched']:.1f} %"
            print(
                f"{a['arm']:<24}{n:>6}{100 * g['exact']:>7.1f} %{100 * g['copied']:>7.1f} %"
                f"{matched:>9}{100 * g['chance_matched']:>6.0f} %{ratio:>15}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--arm", action="append", default=None, help="NAME:ECHO:LO-HI[:PASSES], repeatable (first: baseline)"
    )
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--docs", type=int, default=200, help="fresh documents per line count in the eval")
    parser.add_argument("--data-passes", type=float, default=3.0, help="times each packed row is seen")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="24 steps, 10 documents: checks the path, not learning")
    args = parser.parse_args(argv)
    steps, docs = (24, 10) if args.quick else (args.steps, args.docs)
    if not args.data_passes > 0 or not math.isfinite(args.data_passes):
        parser.error(f"--data-passes: times each row is seen, a number > 0; got {args.data_passes}")
    try:  # every arm checked before the first one trains (an arm takes ~20 min here)
        arms = [parse_arm(a) for a in (args.arm or DEFAULT_ARMS)]
        arms = [replace(a, data_passes=a.data_passes or args.data_passes) for a in arms]
        for arm in arms:
            probe_config(arm, steps, args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    if len({a.name for a in arms}) != len(arms):
        parser.error("arm names must differ")
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {"machine": machine(), "quick": args.quick, "steps": steps, "seed": args.seed}
    result.update(eval_docs=docs, shape=SHAPE, arms_asked=[a.name for a in arms], complete=False, arms=[])
    with tempfile.TemporaryDirectory(prefix="lookup-probe-") as tmp:
        for arm in arms:
            lo, hi = arm.key_digits
            print(f"arm {arm.name}: echo {arm.echo}, keys of {lo}-{hi} digits", flush=True)
            result["arms"].append(run_arm(arm, steps, args.seed, docs, Path(tmp)))
            write_result("lookup_probe", result)  # each arm kept as soon as it is done
    result["complete"] = True
    report(result)
    print(f"wrote {write_result('lookup_probe', result)}")
    return 0
