"""Quantized decode on a CUDA GPU (issue 13's GPU part): bf16 against fp8_dynamic, int8_weight_only and
int4_weight_only, each decode step captured as a CUDA graph, at batch 1 and batch 8, with quality beside it.

Measured, in one process and interleaved (every variant once per repetition, the order rotating):

- Decode tokens/s on the static cache (`engine.static_decode.greedy_static`: `batch` equal-length 32-token
  prompts, `steps` greedy tokens after the prefill's, the step replayed as one CUDA graph; tokens stay on the
  device until the end). Variants: bf16 as loaded (also run eagerly, without the graph: what capture buys),
  fp8_dynamic (float8_e4m3fn weights and per-token activations on `torch._scaled_mm`, row-wise scales),
  int8_weight_only (torch's CUDA `_weight_int8pack_mm`) and int4_weight_only (tinygemm's
  `_weight_int4pack_mm`, group 128 or the largest group that divides every projection).
- Achieved GB/s = steps/s x the bytes a decode step reads (projection weights as stored, scales included,
  plus the KV cache up to the mean position), against the GPU's read roofline measured in the same run.
- J/token from `auto_meter()` over the decode steps (NVML where the driver exposes it: measured; else its
  provenance says estimated).
- Numerics on every model: top-1 agreement and relative error of the prefill logits against bf16, and the share
  of greedy tokens equal to bf16's over the timed decode (random-weight dummy models have no quality beyond that).
- Quality on jp-large: golden accuracy of each variant on the quality gate's examples (golden test split,
  `gate_examples(per_cell)`), served by the paged engine on the GPU, against bf16 and against fp32 on the GPU,
  in points with 95 % Wilson intervals, overall and per skill.

Every speedup is the median of per-repetition paired ratios against bf16-with-graphs, with its min-max spread.

`python benchmarks/quantize_cuda.py [--quick]` on a machine with a CUDA GPU; without one it says so and exits 0.
`--cpu-smoke` runs the same code on this CPU (tiny models, eager, fp8 through torch's slow reference path)
to check the script before GPU time is spent on it; its numbers are not results.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch

from joulepath.bench.common import machine, read_bandwidth_gb_s, write_result
from joulepath.bench.quantize import PROMPT_TOKENS, int4_group_size, make_prompts, spread
from joulepath.engine import EngineConfig
from joulepath.engine.context import context_tokens
from joulepath.engine.static_decode import BatchResult, greedy_static
from joulepath.meter import Meter, auto_meter, provenance_kind
from joulepath.model import DenseCausalAttention, LoadedModel, load_model
from joulepath.model.transformer import Linear
from joulepath.optimize.levers import GATE_MAX_TOKENS, gate_examples, parse_lever, skill_drops
from joulepath.optimize.quant import QuantizedLinear, QuantMode, available_modes, quantize_model
from joulepath.quality.evals import EvalReport, evaluate, wilson_interval

MODELS = ("dummy:llama-3.2-1b", "dummy:qwen2.5-0.5b", "jp-large")
QUICK_MODELS = ("dummy:qwen2.5-0.5b", "jp-large")
SMOKE_MODELS = ("dummy:tiny-llama",)
MODES: tuple[QuantMode, ...] = ("fp8_dynamic", "int8_weight_only", "int4_weight_only")
LEVERS = (
    "fp8_dynamic",
    "fp8_dynamic+skip=output",
    "int8_weight_only",
    "int4_weight_only",
)  # +skip: the gate's 1st opt-out
ENERGY_WINDOW_S = 1.0  # NVML's energy counter moves in steps: a metered decode run lasts at least this long
BASELINE, EAGER = "bf16", "bf16_eager"
QUALITY_MODEL = "jp-large"
BATCHES = (1, 8)
SHORT = {"fp8_dynamic": "fp8", "int8_weight_only": "int8", "int4_weight_only": "int4"}


@dataclass
class Variant:
    """One way of running a model: its weights, whether the step is captured, the bytes a step reads."""

    name: str
    loaded: LoadedModel
    capture: bool
    weight_bytes: int


def projection_bytes(loaded: LoadedModel) -> int:
    """Bytes of every projection weight as stored (quantized modules: values and scales)."""
    return sum(
        m.weight_bytes if isinstance(m, QuantizedLinear) else m.weight.numel() * m.weight.element_size()
        for m in loaded.model.modules()
        if isinstance(m, Linear | QuantizedLinear)
    )


def kv_bytes(loaded: LoadedModel, batch: int, cache_len: int) -> float:
    """KV-cache bytes a decode step reads: the static cache's whole length (masked positions are read too),
    keys and values of every layer in the model's dtype."""
    cfg = loaded.config
    size = next(loaded.model.parameters()).element_size()
    return 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * cache_len * batch * size


def variants(spec: str, device: torch.device, smoke: bool) -> tuple[dict[str, Variant], dict[str, str]]:
    """bf16 (with and without graphs) and each quantized mode that runs here; the others with the reason."""
    dtype = torch.float32 if smoke else torch.bfloat16
    base = load_model(spec, device=device, dtype=dtype)
    capture = device.type == "cuda"
    out = {
        BASELINE: Variant(BASELINE, base, capture, projection_bytes(base)),
        EAGER: Variant(EAGER, base, False, projection_bytes(base)),
    }
    skipped: dict[str, str] = {}
    usable = available_modes(device)
    group = int4_group_size(base)
    for name in LEVERS:
        lever = parse_lever(name)
        mode = cast(QuantMode, lever.mode)
        reason = usable[mode]
        if reason is not None and not (smoke and mode == "fp8_dynamic"):
            skipped[name] = reason
            continue
        if mode == "int4_weight_only" and group is None:
            skipped[name] = "no int4 group size divides every projection"
            continue
        loaded = LoadedModel(copy.deepcopy(base.model), base.config, base.tokenizer, base.source)
        quantize_model(loaded.model, mode, skip=lever.skip, group_size=group or 128, reference=smoke)
        out[name] = Variant(name, loaded, capture, projection_bytes(loaded))
    return out, skipped


@torch.inference_mode()
def numerics(base: LoadedModel, other: LoadedModel, prompts: list[list[int]]) -> dict[str, float]:
    """Prefill logits of `other` against `base` on the same prompts: top-1 agreement and relative error."""
    device = next(base.model.parameters()).device
    ids = torch.tensor(prompts, device=device).reshape(-1)
    positions = torch.arange(len(prompts[0]), device=device).repeat(len(prompts))
    attend = DenseCausalAttention([len(p) for p in prompts])  # its plan depends on the lengths alone: shared
    ref = base.model(ids, positions, attend).float()
    got = other.model(ids, positions, attend).float()
    return {
        "prefill_top1_agreement": float((ref.argmax(-1) == got.argmax(-1)).float().mean()),
        "prefill_logits_rel_error": float((got - ref).norm() / ref.norm()),
    }


def timed(models: dict[str, Variant], batch: int, reps: int, steps: int) -> dict[str, list[BatchResult]]:
    """Every variant decoding the same prompts once per repetition, the order rotating."""
    vocab = next(iter(models.values())).loaded.config.vocab_size
    prompts = make_prompts(vocab, batch)
    names = list(models)
    for name in names:  # warm-up: kernels, cuBLAS handles, allocator
        greedy_static(models[name].loaded.model, prompts, min(steps, 8), capture=models[name].capture)
    runs: dict[str, list[BatchResult]] = {n: [] for n in names}
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            v = models[name]
            runs[name].append(greedy_static(v.loaded.model, prompts, steps, capture=v.capture))
    return runs


def metered(v: Variant, batch: int, step_s: float, meter: Meter) -> BatchResult:
    """One decode run long enough for the meter (>= ENERGY_WINDOW_S where the context allows)."""
    room = context_tokens(v.loaded.config) - PROMPT_TOKENS - 2
    steps = max(1, min(room, math.ceil(ENERGY_WINDOW_S / max(step_s, 1e-6))))
    prompts = make_prompts(v.loaded.config.vocab_size, batch)
    return greedy_static(v.loaded.model, prompts, steps, capture=v.capture, meter=meter)


def equal_tokens(runs: list[BatchResult], base: list[BatchResult]) -> tuple[int, int]:
    """(greedy tokens equal to the baseline's at the same place, tokens compared) over paired runs."""
    same = total = 0
    for run, ref in zip(runs, base, strict=True):
        for seq, ref_seq in zip(run.output_ids, ref.output_ids, strict=True):
            same += sum(a == b for a, b in zip(seq, ref_seq, strict=True))
            total += len(seq)
    return same, total


def batch_table(
    models: dict[str, Variant],
    runs: dict[str, list[BatchResult]],
    batch: int,
    steps: int,
    roofline: float,
    meter: Meter,
) -> dict[str, Any]:
    """Per variant: tokens/s, speedup over bf16 with graphs, GB/s and its share of the roofline, J/token
    (one longer metered run), and how many greedy tokens equal bf16's."""
    base_runs = runs[BASELINE]
    cache_len = PROMPT_TOKENS + steps + 1
    rows: dict[str, Any] = {}
    for name, rs in runs.items():
        v = models[name]
        tps = [r.decode_tokens_per_s for r in rs]
        step_s = statistics.median(r.decode_s / r.steps for r in rs)
        gb_s = (v.weight_bytes + kv_bytes(v.loaded, batch, cache_len)) / step_s / 1e9
        energy = metered(v, batch, step_s, meter)
        same, total = equal_tokens(rs, base_runs)
        rows[name] = {
            "tokens_per_s": statistics.median(tps),
            "speedup_vs_bf16": spread(
                [r.decode_tokens_per_s / b.decode_tokens_per_s for r, b in zip(rs, base_runs, strict=True)]
            ),
            "captured": rs[0].captured,
            "weight_bytes": v.weight_bytes,
            "achieved_gb_s": gb_s,
            "roofline_fraction": gb_s / roofline if roofline else None,
            "j_per_token": energy.energy_j / (batch * energy.steps),
            "energy_window_s": energy.decode_s,
            "energy_provenance": energy.energy_provenance,
            "greedy_tokens_equal_to_bf16": same / total if total else None,
        }
    return rows


def quality(device: torch.device, per_cell: int, models: dict[str, Variant]) -> dict[str, Any]:
    """Golden accuracy of each jp-large variant on the gate's examples, served by the paged engine here; a
    variant the engine fails on is recorded with its error and the others go on."""
    examples = gate_examples(per_cell)
    config = EngineConfig(max_batch=32)
    reports: dict[str, EvalReport] = {}
    out: dict[str, Any] = {"examples": len(examples), "split": "golden test", "served_on": str(device)}
    fp32 = load_model(QUALITY_MODEL, device=device)
    reports["fp32"] = evaluate(fp32, examples, config, max_tokens=GATE_MAX_TOKENS)
    for name, v in models.items():
        if name == EAGER:
            continue
        try:
            reports[name] = evaluate(v.loaded, examples, config, max_tokens=GATE_MAX_TOKENS)
        except Exception as exc:  # one device session: keep every other variant's result
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    base = reports[BASELINE]
    for name, r in reports.items():
        correct = round(r.accuracy * len(examples))
        out[name] = {
            "accuracy": r.accuracy,
            "ci95": wilson_interval(correct, len(examples)),
            "delta_pts_vs_bf16": 100 * (r.accuracy - base.accuracy),
            "delta_pts_vs_fp32": 100 * (r.accuracy - reports["fp32"].accuracy),
            "worst_skill_drop_pts_vs_bf16": max((s.drop_points for s in skill_drops(base, r)), default=0.0),
            "answers_equal_to_bf16": sum(a == b for a, b in zip(r.outputs, base.outputs, strict=True)) / len(examples),
        }
    return out


def run(
    quick: bool,
    smoke: bool,
    reps: int,
    steps: int,
    per_cell: int,
    specs: tuple[str, ...] | None = None,
    partial: Callable[[dict[str, Any]], object] | None = None,
) -> dict[str, Any]:
    """The whole measurement; `partial` receives the results so far after each model."""
    device = torch.device("cpu" if smoke else "cuda")
    specs = specs or (SMOKE_MODELS if smoke else QUICK_MODELS if quick else MODELS)
    meter = auto_meter()
    roofline = read_bandwidth_gb_s(str(device.type), n_bytes=2**28 if smoke else 2**31)
    header = {
        "benchmark": "quantize_cuda", "quick": quick, "cpu_smoke": smoke, "device": str(device),
        "read_roofline_gb_s": roofline, "repetitions": reps, "decode_steps": steps, "machine": machine(),
        "provenance": "tokens/s, GB/s, numerics and accuracy measured; J/token as the meter labels it",
    }  # fmt: skip
    results: dict[str, Any] = {}
    for spec in specs:
        models, skipped = variants(spec, device, smoke)
        print(f"{spec}: {', '.join(models)}" + (f"; skipped {', '.join(skipped)}" if skipped else ""), flush=True)
        prompts = make_prompts(models[BASELINE].loaded.config.vocab_size, 2)
        base = models[BASELINE].loaded
        checks = {n: numerics(base, v.loaded, prompts) for n, v in models.items() if n in LEVERS}
        entry: dict[str, Any] = {"skipped": skipped, "numerics": checks}
        for batch in BATCHES:
            runs = timed(models, batch, reps, steps)
            entry[f"b{batch}"] = batch_table(models, runs, batch, steps, roofline, meter)
        if spec == QUALITY_MODEL and per_cell:
            entry["quality"] = quality(device, per_cell, models)
        results[spec] = entry
        if partial is not None:  # a device session can end mid-run: what was measured is kept
            partial({**header, **headline(results), "models": results, "complete": False})
        del models
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {**header, **headline(results), "models": results, "complete": True}


def headline(results: dict[str, Any]) -> dict[str, float | None]:
    """`<mode>_speedup_b<batch>` on the first model measured (the largest), graphs vs eager for bf16, and
    jp-large's accuracy deltas, for RESULTS.md."""
    first: dict[str, Any] = next(iter(results.values()), {})
    out: dict[str, float | None] = {}
    for batch in BATCHES:
        table = first.get(f"b{batch}", {})
        for mode in MODES:
            out[f"{SHORT[mode]}_speedup_b{batch}"] = table[mode]["speedup_vs_bf16"]["median"] if mode in table else None
        eager = table.get(EAGER)
        out[f"graph_speedup_b{batch}"] = 1 / eager["speedup_vs_bf16"]["median"] if eager else None
    q = results.get(QUALITY_MODEL, {}).get("quality", {})
    for mode in MODES:
        out[f"{SHORT[mode]}_accuracy_delta_pts"] = q.get(mode, {}).get("delta_pts_vs_bf16")
    out["fp8_skip_output_accuracy_delta_pts"] = q.get("fp8_dynamic+skip=output", {}).get("delta_pts_vs_bf16")
    return out


def report(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(
        f"\nquantize_cuda on {m.get('gpu', r['device'])} (torch {m['torch']}), read roofline "
        f"{r['read_roofline_gb_s']:.0f} GB/s (measured), {r['repetitions']} reps x {r['decode_steps']} decode steps"
    )
    for spec, entry in r["models"].items():
        for batch in BATCHES:
            print(f"{spec} batch {batch}:")
            for name, row in entry[f"b{batch}"].items():
                s = row["speedup_vs_bf16"]
                flag = "  (spread includes 1.0)" if s["includes_1"] and name != BASELINE else ""
                print(
                    f"  {name:24s} {row['tokens_per_s']:9.1f} tok/s  {s['median']:5.2f}x bf16 "
                    f"[{s['min']:.2f}-{s['max']:.2f}]  {row['achieved_gb_s']:7.1f} GB/s "
                    f"({row['roofline_fraction']:.2f} of roofline)  "
                    f"{row['j_per_token']:.4f} J/token ({provenance_kind(row['energy_provenance'])})  "
                    f"greedy = bf16 {row['greedy_tokens_equal_to_bf16']:.2f}{flag}"
                )  # fmt: skip
        for name, why in entry["skipped"].items():
            print(f"  {name}: not run ({why})")
        for name, q in entry.get("quality", {}).items():
            if isinstance(q, dict) and "error" in q:
                print(f"  golden {name:24s} failed: {q['error']}")
            elif isinstance(q, dict):
                print(
                    f"  golden {name:24s} {100 * q['accuracy']:5.1f} % ({q['delta_pts_vs_bf16']:+.1f} vs bf16, "
                    f"{q['delta_pts_vs_fp32']:+.1f} vs fp32, worst {0.0 - q['worst_skill_drop_pts_vs_bf16']:+.1f})"
                )
    if r["cpu_smoke"]:
        print("cpu smoke run: the code path was checked; these numbers are not results")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="two models, 2 repetitions, 64 steps (under a minute)")
    p.add_argument("--cpu-smoke", action="store_true", help="run the code path on this CPU (tiny model)")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--per-cell", type=int, default=None, help="gate examples per skill and level (0: no quality)")
    p.add_argument("--models", nargs="+", default=None, help=f"model specs (default {' '.join(MODELS)})")
    args = p.parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("quantize_cuda: no CUDA device here; nothing measured (run it on the device machine, or --cpu-smoke)")
        return 0
    reps = args.reps or (1 if args.cpu_smoke else 2 if args.quick else 3)
    steps = args.steps or (4 if args.cpu_smoke else 64 if args.quick else 128)
    per_cell = args.per_cell if args.per_cell is not None else (0 if args.cpu_smoke else 10)
    save = None if args.cpu_smoke else (lambda partial: write_result("quantize_cuda", partial))
    r = run(args.quick, args.cpu_smoke, reps, steps, per_cell, tuple(args.models) if args.models else None, save)
    report(r)
    if save is not None:
        print(f"wrote {save(r)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
