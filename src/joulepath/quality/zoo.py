"""Publishing a trained zoo model: its Hugging Face folder goes into the package (`model/zoo/<name>`)
with a model card that states the data, the training configuration and time, and the eval results.

`python -m joulepath.quality.zoo --run runs/zoo/jp-large --name jp-large` evaluates the
run's final weights on the golden test split and writes the folder and its card.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import torch

from joulepath.model import load_model
from joulepath.model.checkpoint import ZOO_MODELS, zoo_path
from joulepath.quality import golden
from joulepath.quality.evals import EvalReport, evaluate
from joulepath.quality.tasks import CHAT_TEMPLATE, LEVELS, SKILLS

SHIPPED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json")


def _accuracy_table(report: EvalReport) -> str:
    head = "| skill | " + " | ".join(LEVELS) + " |\n|---|" + "---|" * len(LEVELS)
    rows = []
    for skill in SKILLS:
        cells = [report.cell(skill, level) for level in LEVELS]
        rows.append(f"| {skill} | " + " | ".join(f"{c.correct}/{c.n}" for c in cells) + " |")
    totals = [f"**{100 * report.level_accuracy(level):.1f} %**" for level in LEVELS]
    return "\n".join([head, *rows, "| all | " + " | ".join(totals) + " |"])


def model_card(name: str, train_config: dict[str, Any], seconds: float, machine: str, report: EvalReport) -> str:
    params = train_config.get("parameters", "?")
    cfg_lines = "\n".join(f"| {k} | {v} |" for k, v in train_config.items())
    return f"""# {name}

A small Llama-family model trained by joulepath, from scratch, on its own verifiable task suite
(`joulepath.quality.tasks`): addition, multiplication, sorting, reversing, counting, comparing,
energy/power unit conversion and key-value lookup in a long document, at three difficulty levels.
It exists so that `joulepath run` has a real model to serve with no downloads; it knows nothing else.

- Parameters: {params}
- Format: Hugging Face folder (config.json, model.safetensors in float32, tokenizer.json: byte-level
  BPE with one token per digit, chat_template.jinja).
- Chat format: `<|system|>...\\n<|user|>...\\n<|assistant|>answer<|end|>`.

## Data
Examples drawn fresh from the suite's seeded generators at every step (no fixed training set); the
golden sets (`quality/data/`) are fixed files generated from other seeds and were never trained on.

## Training
`joulepath train` (AdamW, linear warm-up then cosine decay, gradient clipping, loss on answer tokens
only, curriculum by difficulty). Wall time {seconds / 60:.0f} minutes on {machine}.

| setting | value |
|---|---|
{cfg_lines}

## Evaluation (golden test split, greedy, exact match, {report.cells[0].n} per cell)
Overall {100 * report.accuracy:.1f} %.

{_accuracy_table(report)}

## Limits
Answers only the suite's task formats; anything else gets a confident wrong answer. Accuracy falls
with difficulty (see the table): the router in later issues uses exactly that gradient.
"""


def publish(run_dir: Path, name: str, seconds: float | None, machine: str, per_cell: int = 40) -> Path:
    """Evaluate a finished run on the golden test split and copy it, with its card, into the package."""
    if name not in ZOO_MODELS:
        raise ValueError(f"unknown zoo model {name!r}; known: {', '.join(ZOO_MODELS)}")
    state = torch.load(run_dir / "trainer_state.pt", weights_only=False, map_location="cpu")
    loaded = load_model(str(run_dir))
    report = evaluate(loaded, golden.load("test", per_cell=per_cell))
    dest = zoo_path(name)
    dest.mkdir(parents=True, exist_ok=True)
    for file in SHIPPED_FILES:
        if (run_dir / file).is_file():
            shutil.copy2(run_dir / file, dest / file)
    (dest / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")  # the suite's current template
    train_config = {**state["config"], "steps_done": state["step"]}
    train_config["parameters"] = f"{sum(p.numel() for p in loaded.model.parameters()) / 1e6:.2f} M"
    seconds = seconds if seconds is not None else float(state.get("seconds", 0.0))
    (dest / "README.md").write_text(model_card(name, train_config, seconds, machine, report), encoding="utf-8")
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a finished `joulepath train` folder")
    parser.add_argument("--name", required=True, choices=ZOO_MODELS)
    parser.add_argument("--seconds", type=float, help="training wall time (default: the run's own record)")
    parser.add_argument("--machine", default="2 CPU cores (the project's CI-class VM)")
    parser.add_argument("--per-cell", type=int, default=40)
    args = parser.parse_args()
    print(publish(args.run, args.name, args.seconds, args.machine, args.per_cell))


if __name__ == "__main__":
    main()
