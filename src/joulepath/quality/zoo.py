"""Publishing a trained zoo model: its Hugging Face folder goes into the package (`model/zoo/<name>`)
with a model card that states the data, the training configuration, hardware, time and tokens seen,
and the measured results: golden test accuracy per cell, multi-token heads' acceptance, refusals.

    python -m joulepath.quality.zoo --run runs/zoo/jp-large --name jp-large            # a `joulepath train` run
    python -m joulepath.quality.zoo --run /tmp/z/jp-large --name jp-large --log train_log.json   # a device run
    python -m joulepath.quality.zoo --run /tmp/z2/jp-large --name jp-large --log 1/train_log.json 2/train_log.json
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from joulepath.model import load_model
from joulepath.model.checkpoint import ZOO_MODELS, zoo_path
from joulepath.model.mtp import CONFIG_FILE, HEADS_FILE, load_heads
from joulepath.quality import golden
from joulepath.quality.evals import EvalReport, evaluate, mean_accepted_length
from joulepath.quality.tasks import CHAT_TEMPLATE, LEVELS, SKILLS
from joulepath.quality.train import TrainConfig

TRAINING_FILE = "training.json"  # measured facts of the training run, shipped with the weights
SHIPPED_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "generation_config.json",
    HEADS_FILE,
    CONFIG_FILE,
)


@dataclass(frozen=True)
class TrainingRecord:
    """How a model was trained, as its card states it."""

    config: dict[str, Any]
    seconds: float  # training wall time
    machine: str
    tokens_seen: int  # packed tokens (real + padding) through the model
    facts: dict[str, str] = field(default_factory=dict)  # measured extras (throughput, GPU busy share)
    tokens_per_s: float | None = None  # measured after warm-up
    gpu_busy_fraction: float | None = None  # NVML, over the timed window

    def summary(self) -> dict[str, Any]:
        """What `training.json` holds (the benchmark reads throughput and GPU busy share from it)."""
        return {
            "machine": self.machine,
            "wall_s": self.seconds,
            "tokens_seen": self.tokens_seen,
            "tokens_per_s": self.tokens_per_s,
            "gpu_busy_fraction": self.gpu_busy_fraction,
            "provenance": "measured during training",
        }

    @classmethod
    def from_trainer_state(cls, run_dir: Path, machine: str) -> TrainingRecord:
        state = torch.load(run_dir / "trainer_state.pt", weights_only=False, map_location="cpu")
        cfg = state["config"]
        rows = TrainConfig(**cfg).rows_per_step  # the one definition of rows per step
        return cls(
            {**cfg, "steps_done": state["step"]},
            float(state["seconds"]),
            machine,
            state["step"] * rows * cfg["seq_len"],
        )

    @classmethod
    def from_device_logs(cls, log_paths: list[Path], name: str) -> TrainingRecord:
        """One record from device runs of `name` in order, each after the first a warm start from the
        one before (`--init`): wall time and tokens add up; the settings shown are the last run's."""
        runs = []
        for path in log_paths:
            log = json.loads(path.read_text(encoding="utf-8"))
            if name not in log:
                raise ValueError(f"{path}: no run of {name} in this log (it has {', '.join(sorted(log))})")
            runs.append((log[name], log["machine"]))
        run, machine = runs[-1]
        facts = {"tokens/s (measured, after warm-up)": f"{run['tokens_per_s']:,}"}
        if run.get("gpu_busy_fraction") is not None:
            facts["GPU busy (NVML, timed window)"] = f"{100 * run['gpu_busy_fraction']:.1f} %"
        if len(runs) > 1:
            facts["runs"] = "; ".join(
                f"{i + 1}: {r['wall_s'] / 60:.1f} min, {r['tokens_seen'] / 1e6:.1f} M tokens, "
                f"peak lr {r['config']['lr']:g}"
                + (f" (warm start from run {i})" if r["config"].get("init_from") else "")
                for i, (r, _) in enumerate(runs)
            )
        steps = sum(r["curve"][-1]["step"] if r["curve"] else 0 for r, _ in runs)
        where = f"one {machine.get('gpu', 'CPU')} (torch {machine['torch']})"
        config = {k: v for k, v in run["config"].items() if k != "init_from"}
        return cls(
            {**config, "steps_done": steps},
            sum(r["wall_s"] for r, _ in runs),
            where,
            sum(r["tokens_seen"] for r, _ in runs),
            facts,
            run.get("tokens_per_s"),
            run.get("gpu_busy_fraction"),
        )


def _accuracy_table(report: EvalReport) -> str:
    head = "| skill | " + " | ".join(LEVELS) + " |\n|---|" + "---|" * len(LEVELS)
    rows = []
    for skill in SKILLS:
        cells = [report.cell(skill, level) for level in LEVELS]
        rows.append(f"| {skill} | " + " | ".join(f"{c.correct}/{c.n}" for c in cells) + " |")
    totals = [f"**{100 * report.level_accuracy(level):.1f} %**" for level in LEVELS]
    return "\n".join([head, *rows, "| all | " + " | ".join(totals) + " |"])


def model_card(name: str, params_m: float, record: TrainingRecord, report: EvalReport, extra: str = "") -> str:
    cfg_lines = "\n".join(f"| {k} | {v} |" for k, v in record.config.items())
    fact_lines = "".join(f"\n- {k}: {v}" for k, v in record.facts.items())
    questions = int(record.config.get("lookup_questions", 1))
    lookups = (
        f"Each lookup document is asked up to {questions} distinct keys, one chat turn each (the first turn exactly "
        "as the golden sets ask), so a long document trains several answers.\n"
        if questions > 1
        else ""
    )
    return f"""# {name}

A small Llama-family model trained by joulepath, from scratch, on its own verifiable task suite
(`joulepath.quality.tasks`): addition, multiplication, sorting, reversing, counting, comparing,
energy/power unit conversion and key-value lookup in a long document, at three difficulty levels.
It exists so that `joulepath run` has a real model to serve with no downloads; it knows nothing else.

- Parameters: {params_m:.2f} M
- Format: Hugging Face folder (config.json, model.safetensors in {record.config.get("save_dtype", "bfloat16")},
  tokenizer.json: byte-level BPE with one token per digit, chat_template.jinja).
- Chat format: `<|system|>...\\n<|user|>...\\n<|assistant|>answer<|end|>`.

## Data
Examples drawn from the suite's seeded generators, rendered in the chat format, tokenized and packed
into fixed-length rows ahead of training (`quality/shards.py`: whole examples, attention kept inside
each example, loss on answer tokens only), plus the safety set's *training* split: forbidden requests
answered "I can't help with that request.", harmless ones "I don't know.". The golden sets
(`quality/data/`) and the safety set's test split are fixed files from other seeds, never trained on.
{lookups}
## Training
`quality/train.py` (AdamW, warm-up then cosine, gradient clipping, bf16 autocast on CUDA).
Wall time {record.seconds / 60:.1f} minutes on {record.machine};
{record.tokens_seen / 1e6:.1f} M tokens seen.{fact_lines}

`steps` is a cap: with `time_budget_s` set, the budget decides the run's length (`steps_done`).

| setting | value |
|---|---|
{cfg_lines}

## Evaluation (golden test split, greedy, exact match, {report.cells[0].n} per cell, measured)
Overall {100 * report.accuracy:.1f} %.

{_accuracy_table(report)}
{extra}
## Limits
Answers only the suite's task formats; anything else gets a confident wrong answer. Accuracy falls
with difficulty (see the table): the router in later issues uses exactly that gradient.
"""


@dataclass(frozen=True)
class Published:
    folder: Path
    report: EvalReport
    mtp_mean_accepted: float | None


def publish(run_dir: Path, name: str, record: TrainingRecord, per_cell: int = 40, extra_card: str = "") -> Published:
    """Evaluate a finished model on the golden test split (and its heads on the dev split) and copy
    it, with its card, into the package."""
    if name not in ZOO_MODELS:
        raise ValueError(f"unknown zoo model {name!r}; known: {', '.join(ZOO_MODELS)}")
    loaded = load_model(str(run_dir))
    report = evaluate(loaded, golden.load("test", per_cell=per_cell))
    heads = load_heads(run_dir)
    accepted = None
    if heads is not None:
        dev = golden.load("dev", per_cell=min(per_cell, 10))  # 240 answers: enough for a mean
        accepted = mean_accepted_length(loaded, heads, evaluate(loaded, dev))
        extra_card = (
            f"\n## Multi-token heads (`{HEADS_FILE}`, `{CONFIG_FILE}`)\n{heads.cfg.n_heads} Medusa-1 heads "
            "(residual SiLU block each, the model's LM head shared) trained on the detached trunk; a plain "
            "Hugging Face loader ignores both files. Mean accepted length with greedy chain verification "
            f"on the golden dev split (10 per cell): **{accepted:.2f} tokens per step** (measured, teacher-forced).\n"
            + extra_card
        )
    dest = zoo_path(name)
    if dest.exists():
        shutil.rmtree(dest)  # replace the old weights once, whole
    dest.mkdir(parents=True)
    for file in SHIPPED_FILES:
        if (run_dir / file).is_file():
            shutil.copy2(run_dir / file, dest / file)
    (dest / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")  # the suite's current template
    params_m = sum(p.numel() for p in loaded.model.parameters()) / 1e6
    (dest / "README.md").write_text(model_card(name, params_m, record, report, extra_card), encoding="utf-8")
    (dest / TRAINING_FILE).write_text(json.dumps(record.summary(), indent=2, allow_nan=False), encoding="utf-8")
    return Published(dest, report, accepted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a finished model folder")
    parser.add_argument("--name", required=True, choices=ZOO_MODELS)
    parser.add_argument(
        "--log",
        type=Path,
        nargs="+",
        help="the device runs' train_log.json, in order (default: the folder's trainer_state.pt)",
    )
    parser.add_argument("--machine", default="2 CPU cores (the project's CI-class VM)")
    parser.add_argument("--per-cell", type=int, default=40)
    parser.add_argument("--card-extra", type=Path, help="a Markdown file appended to the card (e.g. alignment results)")
    parser.add_argument("--json", type=Path, help="write the measured results here")
    args = parser.parse_args()
    record = (
        TrainingRecord.from_device_logs(args.log, args.name)
        if args.log
        else TrainingRecord.from_trainer_state(args.run, args.machine)
    )
    extra = args.card_extra.read_text(encoding="utf-8") if args.card_extra else ""
    done = publish(args.run, args.name, record, args.per_cell, extra)
    result = {
        "model": args.name,
        "by_level": {lv: done.report.level_accuracy(lv) for lv in LEVELS},
        "cells": {f"{c.skill}/{c.level}": c.accuracy for c in done.report.cells},
        "accuracy": done.report.accuracy,
        "mtp_mean_accepted": done.mtp_mean_accepted,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "cells"}))


if __name__ == "__main__":
    main()
