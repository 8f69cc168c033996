"""Compute commands: generate, bench, train, eval."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from joulepath.cli.common import JsonFlag, app, bench_app, console, guarded, print_json, progress
from joulepath.cli.tables import Col, fit_table, num

MODEL_HELP = "Zoo model (jp-small, jp-large), a Hugging Face model folder or dummy:PRESET."


@app.command("generate")
def generate_cmd(
    prompt: str,
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "jp-large",
    max_tokens: Annotated[int, typer.Option(min=1, help="Tokens to generate at most (capped at the context).")] = 64,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    top_k: Annotated[int, typer.Option(help="0 = off.")] = 0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Sampling seed.")] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop string (repeatable).")] = None,
    chat: Annotated[
        bool | None, typer.Option(help="Wrap the prompt in the chat template (default: when the model has one).")
    ] = None,
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
        use_chat = chat if chat is not None else loaded.chat_template is not None
        text = loaded.apply_chat_template([{"role": "user", "content": prompt}]) if use_chat else prompt
        params = SamplingParams(max_tokens, temperature, top_k, top_p, seed, tuple(stop or ()))
        return Engine(loaded), text, params

    engine, text, params = guarded(prepare)
    stream = engine.stream(text, params)
    pieces = guarded(lambda: list(stream) if json_out else _echo(stream))
    record = engine.records[-1]
    decode_s = record.e2e_s - record.ttft_s
    tok_s = (record.output_tokens - 1) / decode_s if record.output_tokens > 1 and decode_s > 0 else 0.0
    if json_out:
        print_json({"text": "".join(pieces), "record": record, "decode_tokens_per_s": tok_s, "model": model})
        return
    console.print()
    if record.capped_max_tokens is not None:
        console.print(
            f"[yellow]note:[/] max_tokens capped from {max_tokens} to {record.capped_max_tokens}: the prompt "
            f"({record.prompt_tokens} tokens) and the answer must fit {model}'s context ({engine.context_tokens} "
            "tokens)",
            highlight=False,
        )
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
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps.")] = 2000,
    tokens_per_step: Annotated[int, typer.Option(min=1, help="Packed tokens per optimizer step.")] = 4096,
    seq_len: Annotated[int, typer.Option(min=16, help="Packed row length, tokens.")] = 2048,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-3,
    mtp_heads: Annotated[int, typer.Option(min=0, help="Medusa heads trained alongside (0: none).")] = 0,
    seed: Annotated[int, typer.Option(help="Data and init seed.")] = 0,
    data_rows: Annotated[
        int, typer.Option(min=0, help="Packed rows made ahead (0: one pass, steps x rows per step; fewer repeat).")
    ] = 0,
) -> None:
    """Train a zoo model on the task suite and the safety set's training split (packed rows made ahead,
    AdamW, cosine, clipping, checkpoints, resume); the GPU run is benchmarks/zoo_train_gpu.py."""
    from joulepath.quality.train import TrainConfig, train
    from joulepath.serving.guard import safety_texts

    cfg = guarded(
        lambda: TrainConfig(
            preset=preset, steps=steps, tokens_per_step=tokens_per_step, seq_len=seq_len, lr=lr, mtp_heads=mtp_heads,
            seed=seed, log_every=1, data_rows=data_rows,
        )
    )  # fmt: skip
    safety = safety_texts("train")
    with progress() as bar:
        task = bar.add_task("making packed rows", total=steps)

        def show(s: Any) -> None:
            bar.update(
                task,
                completed=s.step,
                description=f"step {s.step}/{s.total_steps} loss {s.loss:.3f} {s.tokens_per_s:,.0f} tok/s",
            )

        guarded(lambda: train(cfg, out, show, safety=safety))
    console.print(f"saved {preset} to {out}")


@app.command("eval")
def eval_cmd(
    model: Annotated[str, typer.Option(help=MODEL_HELP)],
    golden: Annotated[str, typer.Option(help="Golden split: dev or test.")] = "dev",
    per_cell: Annotated[int | None, typer.Option(min=1, help="First N examples of each skill/level.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Exact-match accuracy per skill and difficulty with 95 % intervals, tokens, time, J/token."""
    from joulepath.model import load_model
    from joulepath.quality import golden as golden_sets
    from joulepath.quality.evals import evaluate

    loaded = guarded(lambda: load_model(model))
    examples = guarded(lambda: golden_sets.load(golden, per_cell=per_cell))
    report = guarded(lambda: evaluate(loaded, examples))  # e.g. a golden prompt longer than the context
    if json_out:
        cells = [
            {"skill": c.skill, "level": c.level, "n": c.n, "correct": c.correct, "accuracy": c.accuracy, "ci95": c.ci95}
            for c in report.cells
        ]
        print_json(
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
    cols = (Col("skill", left=True), Col("level", left=True), Col("n"), Col("accuracy"), Col("95 % interval"))
    rows = [
        (c.skill, c.level, str(c.n), f"{100 * c.accuracy:.1f} %", f"{100 * c.ci95[0]:.0f}-{100 * c.ci95[1]:.0f} %")
        for c in report.cells
    ]
    title = f"{model} on golden/{golden}: {100 * report.accuracy:.1f} % exact match"
    console.print(fit_table(console, cols, rows, title=title))
    console.print(
        f"{report.output_tokens} tokens in {report.seconds:.1f} s, {num(report.j_per_token, 'J/token')} "
        f"({report.energy_provenance})"
    )


@app.command("align")
def align_cmd(
    model: Annotated[str, typer.Option(help="Zoo model (jp-small, jp-large) or a model folder to align.")],
    out: Annotated[Path, typer.Option(help="Folder for the aligned model and alignment.json.")],
    beta: Annotated[float, typer.Option(help="DPO temperature: how far from the reference.")] = 0.1,
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 150,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 1e-5,
    sft_weight: Annotated[float, typer.Option(help="NLL weight on chosen answers (0 = pure DPO).")] = 1.0,
    refusal_share: Annotated[float, typer.Option(help="Share of each batch drawn from refusal pairs.")] = 0.25,
    per_cell: Annotated[int, typer.Option(min=1, help="Golden test examples per skill/level for before/after.")] = 10,
    json_out: JsonFlag = False,
) -> None:
    """Direct Preference Optimization on suite-made preference pairs; accuracy and refusals before/after."""
    from dataclasses import asdict

    from joulepath.model import load_model, save_checkpoint
    from joulepath.quality import golden
    from joulepath.quality.align import AlignConfig, AlignmentReport, align, behaviour, make_pairs
    from joulepath.report.result_json import write_json_atomic
    from joulepath.serving.guard import safety_texts

    cfg = guarded(
        lambda: AlignConfig(beta=beta, steps=steps, lr=lr, sft_weight=sft_weight, refusal_share=refusal_share)
    )
    loaded = guarded(lambda: load_model(model))
    forbidden = list(safety_texts("train")[0])
    unsafe, safe = (list(texts) for texts in safety_texts("test"))
    examples = golden.load("test", per_cell=per_cell)
    with progress() as bar:
        task = bar.add_task("measuring the reference model", total=steps)
        before = behaviour(loaded, examples, unsafe, safe)
        bar.update(task, description="making preference pairs")
        pairs = make_pairs(loaded, cfg, forbidden)

        def show(s: Any) -> None:
            bar.update(task, completed=s.step, description=f"DPO step {s.step}/{steps} loss {s.loss:.3f}")

        aligned = guarded(lambda: align(loaded, pairs, cfg, show))
        bar.update(task, description="measuring the aligned model")
        after = behaviour(aligned, examples, unsafe, safe)
    report = AlignmentReport(
        before, after, sum(p.kind == "task" for p in pairs), sum(p.kind == "refusal" for p in pairs), cfg
    )
    save_checkpoint(aligned, out)
    payload = {**asdict(report), "accuracy_delta_points": report.accuracy_delta_points, "model": model}
    write_json_atomic(out / "alignment.json", payload)
    if json_out:
        print_json(payload)
        return
    rows = [
        (name, f"{100 * getattr(before, field_):.1f} %", f"{100 * getattr(after, field_):.1f} %")
        for name, field_ in (
            ("golden accuracy", "accuracy"),
            ("refuses unsafe", "refusal_unsafe"),
            ("refuses safe", "refusal_safe"),
        )
    ]
    cols = (Col("", left=True), Col("before"), Col("after"))
    console.print(
        fit_table(console, cols, rows, title=f"DPO on {model}: {len(pairs)} pairs, beta {beta}, {steps} steps")
    )
    console.print(f"accuracy {report.accuracy_delta_points:+.1f} points; saved to {out}")


@app.command("guard")
def guard_cmd(
    text: str,
    output: Annotated[bool, typer.Option(help="Check TEXT as a model output instead of an input.")] = False,
    semantic: Annotated[bool, typer.Option(help="Use the semantic classifier (loads an embedding model).")] = True,
    json_out: JsonFlag = False,
) -> None:
    """Run the guardrails on one text and say which rule fired."""
    from joulepath.serving.guard import Guard, GuardPolicy

    guard = Guard(GuardPolicy(semantic=semantic))
    decision = guard.check_output(text) if output else guard.check_input(text)
    if json_out:
        print_json(
            {"action": decision.action, "text": decision.text, "rules": list(decision.rules), "score": decision.score}
        )
        return
    console.print(decision.explain())
    console.print(decision.text)


@app.command("profile")
def profile_cmd(
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "jp-large",
    per_cell: Annotated[int, typer.Option(min=1, help="Golden dev prompts per skill and level to serve.")] = 4,
    max_batch: Annotated[int, typer.Option(min=1, help="Running sequences per step (1 = no batching).")] = 64,
    json_out: JsonFlag = False,
) -> None:
    """Hot paths of serving: time and energy per operator class, roofline class, and what to do."""
    from dataclasses import asdict

    from joulepath.engine import EngineConfig
    from joulepath.model import load_model
    from joulepath.profile import profile_engine
    from joulepath.quality import golden
    from joulepath.quality.tasks import chat_prompt

    loaded = guarded(lambda: load_model(model))
    prompts = [chat_prompt(e) for e in golden.load("dev", per_cell=per_cell)]
    prof = guarded(lambda: profile_engine(loaded, prompts, config=EngineConfig(max_batch=max_batch)))
    if json_out:
        print_json({**asdict(prof), "advice": [{**asdict(a), "line": a.line()} for a in prof.advice]})
        return
    cols = (
        Col("class", left=True),
        Col("time"),
        Col("share"),
        Col("energy"),
        Col("bound", left=True),
        Col("roofline\nefficiency", drop=1),
    )
    rows = [
        (
            c.name,
            num(1e3 * c.time_s, "ms"),
            f"{100 * c.share:.1f} %",
            num(c.energy_j, "J"),
            c.bound.removesuffix("-bound"),  # compute, memory or host
            "-" if c.roofline_efficiency is None else f"{100 * c.roofline_efficiency:.0f} %",
        )
        for c in prof.classes
    ]
    title = f"hot paths: {model}, {len(prompts)} requests, {num(prof.wall_s, 's')}, {num(prof.energy_j, 'J')}"
    console.print(fit_table(console, cols, rows, title=title))
    console.print(
        f"attributed {100 * prof.attributed_fraction:.1f} % of measured time; profiler overhead "
        f"{100 * prof.overhead_fraction:+.1f} %; energy: {prof.energy_provenance}, split by time (estimated); "
        f"limits: {num(prof.limits.peak_flops / 1e9, 'GFLOP/s')}, {num(prof.limits.bandwidth_bytes_s / 1e9, 'GB/s')} "
        f"({prof.limits.provenance})"
    )
    for a in prof.advice:
        console.print(f"- {a.line()}")


@app.command("tune")
def tune_cmd(
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "jp-large",
    quick: Annotated[bool, typer.Option(help="No compiled candidates, 1 repetition, 16 tokens.")] = False,
    reps: Annotated[int, typer.Option(min=1, max=20, help="Interleaved repetitions.")] = 3,
    json_out: JsonFlag = False,
) -> None:
    """Measure thread count, eager vs compiled decode and weight format for a model on this machine; the
    fastest choice whose quality gate passed is cached for the machine and model (joulepath run reads it)."""
    from joulepath.model import load_model
    from joulepath.optimize import tune as tuning

    guarded(lambda: load_model(model))  # a bad model name is one clear line, before any measuring
    with progress(quiet=json_out) as bar:
        task = bar.add_task("tuning", total=None)
        result = guarded(
            lambda: tuning.tune(
                model, compile_too=not quick, reps=1 if quick else reps, tokens=16 if quick else 32,
                progress=lambda text: bar.update(task, description=text),
            )
        )  # fmt: skip
    path = tuning.store(result)
    if json_out:
        print_json({"result": result, "best": result.best, "cache": str(path)})
        return
    base = result.baseline.tokens_per_s
    cols = (Col("candidate", left=True), Col("tokens/s"), Col("min-max"), Col("vs default"), Col("gate", left=True))
    rows = [
        (
            m.candidate.name,
            num(m.tokens_per_s) if not m.error else "-",
            f"{num(m.low)}-{num(m.high)}" if not m.error else m.error,
            f"{m.tokens_per_s / base:.2f}x" if base and not m.error else "-",
            m.gate,
        )
        for m in sorted(result.measured, key=lambda m: -m.tokens_per_s)
    ]
    title = f"{model} batch-1 decode on {result.machine} (measured, median of {result.repetitions})"
    console.print(fit_table(console, cols, rows, title=title))
    best = result.best
    console.print(
        f"best usable: {best.candidate.name}, {num(best.tokens_per_s, 'tokens/s')} "
        f"({best.tokens_per_s / base:.2f}x the default fp32 eager path); cached in {path}"
    )
