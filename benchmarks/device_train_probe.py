"""GPU probe (device machine only): how fast the zoo trainer runs on one GPU, to size a full training
run within a session's device budget. Trains `--preset` for `--seconds`, then scores a slice of the dev
golden set. Prints steps/s, tokens/s, the loss curve and accuracy per level."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from joulepath.model import load_model
from joulepath.quality import golden
from joulepath.quality.evals import evaluate
from joulepath.quality.train import TrainConfig, TrainState, train


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="jp-large")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--tokens-per-step", type=int, default=8192)
    parser.add_argument("--out", type=Path, default=Path("/tmp/jp-probe"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    log: list[TrainState] = []
    t0 = time.perf_counter()
    cfg = TrainConfig(
        preset=args.preset, steps=args.steps, tokens_per_step=args.tokens_per_step, checkpoint_every=10**9
    )

    def show(s: TrainState) -> None:
        log.append(s)
        if s.step % 100 == 0:
            print(f"{s.step} {s.loss:.3f} {time.perf_counter() - t0:.0f}s", flush=True)

    train(cfg, args.out, show)
    seconds = time.perf_counter() - t0
    loaded = load_model(str(args.out), device="cuda")
    report = evaluate(loaded, golden.load("dev", per_cell=5))
    by_level = {lv: report.level_accuracy(lv) for lv in ("easy", "medium", "hard")}
    result = {
        "preset": args.preset,
        "steps": args.steps,
        "seconds": round(seconds, 1),
        "steps_per_s": round(args.steps / seconds, 2),
        "final_loss": log[-1].loss,
        "accuracy_by_level": by_level,
        "accuracy": report.accuracy,
    }
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
