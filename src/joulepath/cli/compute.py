"""Compute commands: generate, bench, train, eval."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from joulepath.cli import JsonFlag, _guard, _print_json, app, bench_app, console, err_console


@app.command("generate")
def generate_cmd(
    prompt: str,
    model: Annotated[str, typer.Option(help="A Hugging Face model folder or dummy:PRESET.")] = "dummy:tiny-llama",
    max_tokens: Annotated[int, typer.Option(help="Tokens to generate at most.")] = 64,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    top_k: Annotated[int, typer.Option(help="0 = off.")] = 0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Sampling seed.")] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop string (repeatable).")] = None,
    chat: Annotated[bool, typer.Option(help="Wrap the prompt in the model's chat template.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Stream a completion, then print tokens/s and J/token (measured or estimated, labelled)."""
    import torch

    from joulepath.engine import Engine, SamplingParams
    from joulepath.model import load_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32

    def prepare() -> tuple[Engine, str, SamplingParams]:
        loaded = load_model(model, device=device, dtype=dtype)
        text = loaded.apply_chat_template([{"role": "user", "content": prompt}]) if chat else prompt
        params = SamplingParams(max_tokens, temperature, top_k, top_p, seed, tuple(stop or ()))
        return Engine(loaded), text, params

    engine, text, params = _guard(prepare)
    stream = engine.stream(text, params)
    pieces = _guard(lambda: list(stream) if json_out else _echo(stream))
    record = engine.records[-1]
    decode_s = record.e2e_s - record.ttft_s
    tok_s = (record.output_tokens - 1) / decode_s if record.output_tokens > 1 and decode_s > 0 else 0.0
    if json_out:
        _print_json({"text": "".join(pieces), "record": record, "decode_tokens_per_s": tok_s, "model": model})
        return
    console.print()
    console.print(
        f"[dim]{record.output_tokens} tokens, TTFT {1e3 * record.ttft_s:.0f} ms, {tok_s:.1f} tokens/s decode, "
        f"{record.energy_j / max(record.output_tokens, 1):.3g} J/token ({record.energy_provenance}), "
        f"finish: {record.finish_reason}[/]"
    )


def _echo(stream: Any) -> list[str]:
    out = []
    for piece in stream:
        console.print(piece, end="", highlight=False, markup=False)
        out.append(piece)
    return out


@bench_app.command("decode")
def bench_decode(
    quick: Annotated[bool, typer.Option(help="16 tokens instead of 64.")] = False,
    model: Annotated[str, typer.Option(help="Model to decode with.")] = "dummy:qwen2.5-0.5b",
) -> None:
    """Batch-1 decode: tokens/s and GB/s vs the measured memory roofline and vs transformers."""
    from joulepath.bench import decode

    decode.main([*(["--quick"] if quick else []), "--model", model])


@bench_app.command("batch")
def bench_batch(
    quick: Annotated[bool, typer.Option(help="8 requests instead of 32.")] = False,
    sweep: Annotated[bool, typer.Option(help="Try several batch sizes.")] = False,
    model: Annotated[str, typer.Option(help="Model to serve.")] = "dummy:qwen2.5-0.5b",
) -> None:
    """Continuous batching vs one request at a time on Azure-shaped requests."""
    from joulepath.bench import batch

    batch.main([*(["--quick"] if quick else []), *(["--sweep"] if sweep else []), "--model", model])


@app.command("train")
def train_cmd(
    out: Annotated[Path, typer.Option(help="Output folder (resumes if it holds a checkpoint).")],
    preset: Annotated[str, typer.Option(help="Zoo shape: jp-small or jp-large.")] = "jp-small",
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 2000,
    tokens_per_step: Annotated[int, typer.Option(help="Padded tokens per optimizer step.")] = 4096,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-3,
    seed: Annotated[int, typer.Option(help="Data and init seed.")] = 0,
) -> None:
    """Train a zoo model on the task suite (AdamW, cosine, clipping, checkpoints, resume)."""
    from joulepath.quality.train import TrainConfig, train

    cfg = _guard(lambda: TrainConfig(preset=preset, steps=steps, tokens_per_step=tokens_per_step, lr=lr, seed=seed))
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console) as bar:
        task = bar.add_task("training", total=steps)

        def show(s: Any) -> None:
            bar.update(
                task,
                completed=s.step,
                description=f"step {s.step}/{steps} loss {s.loss:.3f} {s.tokens_per_s:,.0f} tok/s",
            )

        _guard(lambda: train(cfg, out, show))
    console.print(f"saved {preset} to {out}")


@app.command("eval")
def eval_cmd(
    model: Annotated[str, typer.Option(help="A model folder or dummy:PRESET.")],
    golden: Annotated[str, typer.Option(help="Golden split: dev or test.")] = "dev",
    per_cell: Annotated[int | None, typer.Option(help="First N examples of each skill/level.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Exact-match accuracy per skill and difficulty with 95 % intervals, tokens, time, J/token."""
    from joulepath.model import load_model
    from joulepath.quality import golden as golden_sets
    from joulepath.quality.evals import evaluate

    loaded = _guard(lambda: load_model(model))
    examples = _guard(lambda: golden_sets.load(golden, per_cell=per_cell))
    report = evaluate(loaded, examples)
    if json_out:
        cells = [
            {"skill": c.skill, "level": c.level, "n": c.n, "correct": c.correct, "accuracy": c.accuracy, "ci95": c.ci95}
            for c in report.cells
        ]
        _print_json(
            {
                "model": model,
                "golden": golden,
                "accuracy": report.accuracy,
                "cells": cells,
                "output_tokens": report.output_tokens,
                "seconds": report.seconds,
                "j_per_token": report.j_per_token,
                "energy_provenance": report.energy_provenance,
            }
        )
        return
    table = Table(title=f"{model} on golden/{golden}: {100 * report.accuracy:.1f} % exact match")
    for col in ("skill", "level", "n", "accuracy", "95 % interval"):
        table.add_column(col, justify="right" if col not in ("skill", "level") else "left")
    for c in report.cells:
        lo, hi = c.ci95
        table.add_row(c.skill, c.level, str(c.n), f"{100 * c.accuracy:.1f} %", f"{100 * lo:.0f}-{100 * hi:.0f} %")
    console.print(table)
    console.print(
        f"{report.output_tokens} tokens in {report.seconds:.1f} s, {report.j_per_token:.3g} J/token "
        f"({report.energy_provenance})"
    )
