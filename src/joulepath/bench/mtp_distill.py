"""Draft heads for speculative decoding: the shipped Medusa heads vs a self-distilled EAGLE-style draft block
(`model/eagle.py`, `quality/mtp_distill.py`), trained and scored in the same run.

Score: tokens per verification step (1 + accepted drafts per decode step) when the engine proposes the full
k = 4 every step and verifies greedily, on golden dev prompts the training never saw. The engine's own
speculative path is what is measured (a copy of the model folder carries the new block), so the count is
the one serving sees. `--write` ships the block in the model's folder when it accepts more than the heads,
with `eagle_distill.json` saying how it was made."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from joulepath.bench.common import machine, write_result
from joulepath.model import load_model
from joulepath.model.checkpoint import zoo_path
from joulepath.model.eagle import EAGLE_CONFIG, EAGLE_FILE, load_eagle, save_eagle
from joulepath.model.mtp import load_heads
from joulepath.quality import golden
from joulepath.quality.evals import speculative_acceptance
from joulepath.quality.mtp_distill import DistillConfig, collect_features, distill_examples, fit_eagle, greedy_answers

RECORD_FILE = "eagle_distill.json"
K = 4


ANSWERS_FILE = "distill_answers.json"


def answers_key(model: str, cfg: DistillConfig) -> dict[str, Any]:
    """What the saved answers depend on: the target, the prompts (seed, per_cell) and the answer length."""
    return {"model": model, "seed": cfg.seed, "per_cell": cfg.per_cell, "max_tokens": cfg.max_tokens}


def cached_answers(folder: Path | None, model: str, cfg: DistillConfig, n: int) -> list[str] | None:
    """The target's answers saved by an earlier run with the same key (`answers_key`), if any."""
    path = folder / ANSWERS_FILE if folder else None
    if path is None or not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    same = saved.get("key") == answers_key(model, cfg) and len(saved.get("answers", ())) == n
    return list(saved["answers"]) if same else None


def run(
    model: str, cfg: DistillConfig, dev_per_cell: int, write: bool, init: Path | None = None, out: Path | None = None
) -> dict[str, Any]:
    loaded = load_model(model)
    folder = Path(loaded.source)
    dev = golden.load("dev", per_cell=dev_per_cell)
    t0 = time.perf_counter()
    examples = distill_examples(cfg.per_cell, cfg.seed)
    answers = cached_answers(init, model, cfg, len(examples)) or greedy_answers(loaded, examples, cfg.max_tokens)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        saved: dict[str, Any] = {"key": answers_key(model, cfg), "answers": answers}
        (out / ANSWERS_FILE).write_text(json.dumps(saved) + "\n", encoding="utf-8")
    t_feats = time.perf_counter()
    feats = collect_features(loaded, examples, answers, cfg.pack_tokens)
    t_fit = time.perf_counter()
    start = load_eagle(init, loaded.config) if init is not None else None
    draft, log = fit_eagle(loaded, feats, cfg, start)
    if out is not None:
        save_eagle(draft, out)
    t_eval = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jp-eagle-") as tmp:
        trial = Path(tmp) / folder.name
        shutil.copytree(folder, trial)
        save_eagle(draft, trial)
        eagle = speculative_acceptance(load_model(str(trial)), "eagle", dev, K)
    medusa = speculative_acceptance(loaded, "mtp", dev, K) if load_heads(folder) is not None else None
    plain_same = medusa is None or eagle["answers"] == medusa["answers"]
    ours, base = eagle["tokens_per_decode_step"], medusa["tokens_per_decode_step"] if medusa else None
    wrote = False
    if write and ours is not None and (base is None or ours > base):
        save_eagle(draft, folder)
        record = {
            "config": dataclasses.asdict(cfg),
            "examples": len(examples),
            "positions": sum(len(f.ids) for f in feats),
            "tokens_per_decode_step": ours,
            "medusa_tokens_per_decode_step": base,
            "k": K,
            "fit_seconds": log.seconds,
            "date_utc": machine()["date_utc"],
            "machine": machine()["cpu"],
            "provenance": "measured: golden dev prompts, engine proposing k = 4 every step, greedy verification",
        }
        (folder / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        wrote = True
    return {
        "model": model,
        "config": dataclasses.asdict(cfg),
        "k": K,
        "dev_examples": len(dev),
        "examples": len(examples),
        "positions": sum(len(f.ids) for f in feats),
        "mtp_mean_accepted_medusa": base,
        "mtp_mean_accepted_eagle": ours,
        "ratio": ours / base if ours and base else None,
        "acceptance_rate_medusa": medusa["acceptance_rate"] if medusa else None,
        "acceptance_rate_eagle": eagle["acceptance_rate"],
        "answers_identical_across_drafters": plain_same,
        "fit": {
            "steps": log.steps,
            "loss_first": log.loss_first,
            "loss_last": log.loss_last,
            "answer_top1_teacher_forced": log.token_accuracy_answer,
        },
        "seconds": {
            "answers": t_feats - t0,
            "features": t_fit - t_feats,
            "fit": log.seconds,
            "eval": time.perf_counter() - t_eval,
            "total": time.perf_counter() - t0,
        },
        "warm_start": str(init) if start is not None else None,
        "wrote": [EAGLE_FILE, EAGLE_CONFIG, RECORD_FILE] if wrote else [],
        "provenance": "measured: tokens per decode step, engine proposing k = 4 every step on golden dev prompts",
        "machine": machine(),
    }


def report(r: dict[str, Any]) -> None:
    b, a = r["mtp_mean_accepted_medusa"], r["mtp_mean_accepted_eagle"]
    print(f"{r['model']}: {r['examples']} distillation prompts ({r['positions']} positions); "
          f"{r['dev_examples']} golden dev prompts, k = {r['k']} every step")  # fmt: skip
    print(f"  tokens per decode step  Medusa heads (shipped) {b if b is None else round(b, 3)}  "
          f"EAGLE block (distilled) {a if a is None else round(a, 3)}"
          + (f"  ({r['ratio']:.2f}x)" if r["ratio"] else ""))  # fmt: skip
    fit = r["fit"]
    print(
        f"  answers identical across proposers: {r['answers_identical_across_drafters']}; teacher-forced answer top-1 "
        f"{fit['answer_top1_teacher_forced']:.3f}; loss {fit['loss_first']:.3f} -> {fit['loss_last']:.3f}"
    )
    print("  seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in r["seconds"].items())
          + (f"; wrote {', '.join(r['wrote'])}" if r["wrote"] else ""))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="4 prompts per cell, 1 epoch, 1 dev prompt per cell")
    parser.add_argument("--model", default="jp-large")
    parser.add_argument("--per-cell", type=int, default=DistillConfig.per_cell)
    parser.add_argument("--epochs", type=int, default=DistillConfig.epochs)
    parser.add_argument("--lr", type=float, default=DistillConfig.lr)
    parser.add_argument("--pack-tokens", type=int, default=DistillConfig.pack_tokens)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--write", action="store_true", help="ship the block if it accepts more than the heads")
    parser.add_argument("--out", type=Path, default=None, help="also save the trained block and the answers here")
    parser.add_argument("--init", type=Path, default=None, help="warm-start from a block (and answers) saved by --out")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = DistillConfig(
        per_cell=4 if args.quick else args.per_cell,
        epochs=1 if args.quick else args.epochs,
        lr=args.lr,
        pack_tokens=args.pack_tokens,
    )
    if (
        args.write
        and args.model in ("jp-small", "jp-large")
        and Path(load_model(args.model).source) != zoo_path(args.model)
    ):
        raise SystemExit(f"--write: {args.model} does not resolve to the shipped zoo folder")
    result = run(args.model, cfg, 1 if args.quick else 10, args.write and not args.quick, args.init, args.out)
    report(result)
    print(f"wrote {write_result('mtp_distill', dict(result, quick=args.quick))}")
    return 0
