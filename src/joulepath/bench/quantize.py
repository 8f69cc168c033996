"""Quantization and sparsity levers vs fp32 and vs transformers + torch dynamic int8 (issue 13).

Measured, all in one process and interleaved (every configuration once per repetition, the order reversed on
odd repetitions, each thread count inside every repetition):

- Decode tokens/s of joulepath's engine at batch 1 and batch 8 for fp32 and each lever: int8_dynamic,
  int8_weight_only, int4_weight_only (group 128, or the largest group that divides every projection), joulepath's
  own kernels int8_vnni and int4_vnni (AVX512-VNNI or AVX2 build, where this CPU and a C compiler allow), and TEAL
  activation sparsity at target 0.5 (batch 1 only). Each configuration has its own loaded model copy and one
  `Engine` kept across repetitions. A repetition adds `batch` requests of a 32-token prompt each, steps the
  engine until every prompt is prefilled (its first token sampled), then times `steps` decode steps
  (`Engine.step()`, one token per sequence each); tokens/s = batch x steps / seconds.
- The baseline a PyTorch user reaches for: the same weights saved as a Hugging Face folder, loaded by
  `transformers.AutoModelForCausalLM` and converted with `torch.ao.quantization.quantize_dynamic(model,
  {nn.Linear}, dtype=torch.qint8)`, decoded greedily one token per forward with `past_key_values` (prefill
  untimed, so generate()'s own overhead is not charged to it). Also timed in fp32 for reference.
- Achieved GB/s = tokens/s / batch x weight bytes a decode step reads (fp32: parameter bytes, tied tensors once;
  quantized: `QuantSummary.weight_bytes_after`; sparsity: fp32 bytes less the measured zeroed share of the
  sparsified projections' rows, an estimate), against this machine's read roofline (`read_bandwidth_gb_s`)
  probed in the same run at the same thread count.
- J/token from `auto_meter()` around the timed steps, with its provenance ("estimated" on a VM without RAPL).
- Quality on jp-large: each lever's gate (`gate_lever`, golden test split, `gate_examples(per_cell)`, the plain
  lever: no opt-outs are tried) and TEAL at 0.5 (calibrated on golden dev prompts, evaluated on the same gate
  examples, compared with `quality.evals.gate`). Accuracy deltas are lever - fp32 in points with 95 % Wilson
  intervals. Gate verdicts are cached (`optimize.levers.cached_gate`).
- "Autotuned best": the fastest lever (median paired speedup over fp32) among those that pass the gate on
  jp-large; for the random-weight dummy:qwen2.5-0.5b (no quality to gate) the fastest lever. Picking the fastest
  of noisy medians favours it slightly (winner's curse). TEAL thresholds come from 4 golden dev prompts per cell
  on jp-large and 1 per cell on random-weight models (there they only set the sparsity level).

Every ratio is the median of per-repetition paired ratios with its min-max spread; `includes_1` flags a spread
that cannot tell the ratio from no change. `python benchmarks/quantize.py [--quick] [--threads N]`.
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from joulepath.bench.common import machine, read_bandwidth_gb_s, write_result
from joulepath.engine import Engine, EngineConfig, SamplingParams
from joulepath.meter import Meter, auto_meter
from joulepath.model import LoadedModel, load_model, save_checkpoint
from joulepath.model.transformer import Linear
from joulepath.optimize.levers import (
    GATE_MAX_TOKENS,
    Lever,
    cached_gate,
    gate_examples,
    gate_lever,
    skill_drops,
    store_gate,
)
from joulepath.optimize.quant import ALL_MODES, INT4_GROUP_SIZES, INT4_MODES, QuantMode, available_modes, quantize_model
from joulepath.optimize.sparsity import (
    SparsityThresholds,
    calibrate,
    measured_sparsity,
    reset_counters,
    sparse_modules,
    sparsify_model,
)
from joulepath.quality import golden
from joulepath.quality.evals import EvalReport, evaluate, gate, wilson_interval
from joulepath.quality.tasks import Example, chat_prompt
from joulepath.results import LeverGate

PROMPT_TOKENS = 32
SPARSITY_TARGET = 0.5
SPARSE = "teal_sparsity_0.5"
INT8_ROUTES = ("int8_dynamic", "int8_vnni")  # the int8 weight-and-activation routes (int8_weight_only: bf16 acts)
GATED_MODEL = "jp-large"  # the model whose golden accuracy the levers are gated on
HEADLINE_MODEL = "dummy:qwen2.5-0.5b"  # real Qwen2.5-0.5B shapes, random weights
CALIBRATION_PER_CELL = 4  # golden dev prompts per (skill, level) for TEAL thresholds
KV_BYTES = 64 * 2**20  # each engine's KV pool: 8 sequences x ~64 tokens fit many times over
GOALS = {  # issue 13's targets: (what, key in the headline, minimum)
    "int8_b1": ("INT8 >= 3x fp32 at batch 1", "int8_speedup_b1", 3.0),
    "int8_b8": ("INT8 >= 4x fp32 at batch 8", "int8_speedup_b8", 4.0),
    "int4_b1": ("INT4 >= 4x fp32 at batch 1", "int4_speedup_b1", 4.0),
    "vs_hf": ("quantized decode >= 1.3x transformers dynamic int8", "speedup_vs_transformers_int8", 1.3),
}


# ---- configurations ------------------------------------------------------------------------------


@dataclass
class Sample:
    """One timed run of one configuration."""

    seconds: float
    tokens: int
    energy_j: float
    provenance: str

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


@dataclass
class Config:
    """One (model variant, batch) to time: `measure(steps, meter)` runs prefill untimed, then times `steps`."""

    name: str  # variant, e.g. "fp32", "int8_dynamic", "transformers_int8"
    batch: int
    bytes_per_step: Callable[[], float]  # weight bytes one decode step reads (called after the samples)
    measure: Callable[[int, Meter], Sample]
    info: dict[str, Any] = field(default_factory=dict)
    samples: dict[int, list[Sample]] = field(default_factory=dict)  # threads -> samples

    @property
    def key(self) -> str:
        return f"{self.name}@b{self.batch}"


def constant(value: float) -> Callable[[], float]:
    return lambda: float(value)


def make_prompts(vocab_size: int, batch: int) -> list[list[int]]:
    """`batch` different 32-token prompts inside the vocabulary (content does not matter for timing)."""
    return [[(1000 + 37 * s + i) % vocab_size for i in range(PROMPT_TOKENS)] for s in range(batch)]


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer-free weight, tied tensors counted once."""
    return sum({p.data_ptr(): p.numel() * p.element_size() for p in model.parameters()}.values())


def int4_group_size(loaded: LoadedModel) -> int | None:
    """128 if it divides every projection's in_features, else the largest group the kernel takes that does."""
    widths = {m.weight.shape[0] for m in loaded.model.modules() if isinstance(m, Linear)}
    for g in sorted(INT4_GROUP_SIZES, key=lambda g: (g != 128, -g)):
        if all(w % g == 0 for w in widths):
            return g
    return None


def engine_measure(loaded: LoadedModel, batch: int, on_timed_start: Callable[[], None] = lambda: None) -> Callable:
    """A `measure` for one engine kept across repetitions."""
    engine = Engine(loaded, EngineConfig(kv_memory_bytes=KV_BYTES, max_batch=max(batch, 1)))
    prompts = make_prompts(loaded.config.vocab_size, batch)

    def measure(steps: int, meter: Meter) -> Sample:
        params = SamplingParams(max_tokens=steps + 1, ignore_eos=True)
        rids = {engine.add_request(p, params) for p in prompts}
        started: set[str] = set()
        while started != rids:  # prefill: each prompt's first token is sampled in the step that finishes it
            started |= {o.request_id for o in engine.step()}
        on_timed_start()
        meter.begin("decode")
        t0 = time.perf_counter()
        for _ in range(steps):
            outs = engine.step()
            assert len(outs) == batch, f"a decode step produced {len(outs)} tokens for {batch} sequences"
        seconds = time.perf_counter() - t0
        energy = meter.end("decode")
        engine.run_until_done()
        return Sample(seconds, steps * batch, energy.total_energy_j, energy.provenance_summary)

    return measure


def hf_measure(hf: nn.Module, vocab_size: int, batch: int) -> Callable:
    """A `measure` for a transformers model: greedy, one token per forward with past_key_values."""
    ids = torch.tensor(make_prompts(vocab_size, batch))  # (B, 32)

    @torch.inference_mode()
    def measure(steps: int, meter: Meter) -> Sample:
        warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)
        mask = torch.ones_like(ids)
        out = hf(input_ids=ids, attention_mask=mask, use_cache=True)
        cache, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        meter.begin("decode")
        t0 = time.perf_counter()
        for _ in range(steps):
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            out = hf(input_ids=token, attention_mask=mask, past_key_values=cache, use_cache=True)
            cache, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        seconds = time.perf_counter() - t0
        energy = meter.end("decode")
        return Sample(seconds, steps * batch, energy.total_energy_j, energy.provenance_summary)

    return measure


def hf_int8_weight_bytes(model: nn.Module) -> int:
    """Projection weight bytes after quantize_dynamic: int8 values plus fbgemm's 12 bytes per output channel."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return sum(
        m.in_features * m.out_features + 12 * m.out_features for m in model.modules() if isinstance(m, DynamicLinear)
    )


def hf_linear_bytes(model: nn.Module) -> int:
    return sum(m.weight.numel() * m.weight.element_size() for m in model.modules() if isinstance(m, nn.Linear))


def transformers_configs(
    loaded: LoadedModel, batches: Sequence[int], with_fp32: bool = True
) -> tuple[list[Config], str | None]:
    """Dynamic-int8 (and fp32) transformers configs on `loaded`'s weights, or ([], why not)."""
    try:
        from transformers import AutoModelForCausalLM
    except ImportError as e:
        return [], f"transformers not importable: {e}"
    from torch.ao.quantization import quantize_dynamic

    vocab = loaded.config.vocab_size
    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(loaded, folder)
        try:
            models = [
                AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval() for _ in range(1 + with_fp32)
            ]
        except Exception as e:  # any loader failure is reported, not fatal
            return [], f"transformers could not load the checkpoint: {type(e).__name__}: {e}"
    fp32, int8 = models[0], models[-1]
    fp32_bytes = hf_linear_bytes(fp32)
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao; users still call it
        warnings.simplefilter("ignore")
        int8 = quantize_dynamic(int8, {nn.Linear}, dtype=torch.qint8)
    int8_bytes = hf_int8_weight_bytes(int8)
    configs = []
    for b in batches:
        if with_fp32:
            configs.append(Config("transformers_fp32", b, constant(fp32_bytes), hf_measure(fp32, vocab, b)))
        configs.append(Config("transformers_int8", b, constant(int8_bytes), hf_measure(int8, vocab, b)))
    return configs, None


def quant_configs(spec: str, batches: Sequence[int]) -> tuple[list[Config], dict[str, str]]:
    """fp32 and one config per available quantization mode (a fresh model copy each), and skipped modes."""
    base = load_model(spec)
    fp32_bytes = float(parameter_bytes(base.model))
    configs = [Config("fp32", b, constant(fp32_bytes), engine_measure(base, b)) for b in batches]
    skipped = {m: why for m, why in available_modes().items() if why is not None}
    for mode in ALL_MODES:  # torch's kernels and joulepath's VNNI ones where this CPU has them
        if mode in skipped:
            continue
        loaded = load_model(spec)
        group = int4_group_size(loaded) or 128
        if mode in INT4_MODES and int4_group_size(loaded) is None:
            skipped[mode] = "no int4 group size divides every projection's in_features"
            continue
        summary = quantize_model(loaded.model, mode, group_size=group)
        info = {"bytes_per_weight": summary.bytes_per_weight, "weight_bytes": summary.weight_bytes_after}
        if mode in INT4_MODES:
            info["group_size"] = group
        after = float(summary.weight_bytes_after)
        configs += [Config(mode, b, constant(after), engine_measure(loaded, b), dict(info)) for b in batches]
    return configs, skipped


@functools.cache
def thresholds_for(spec: str, per_cell: int) -> SparsityThresholds:
    """TEAL thresholds at SPARSITY_TARGET from `per_cell` golden dev prompts per cell (once per process)."""
    prompts = [chat_prompt(e) for e in golden.load("dev", per_cell=per_cell)]
    return calibrate(load_model(spec), prompts, SPARSITY_TARGET)


def sparse_config(spec: str, calibration_per_cell: int) -> Config:
    """TEAL at SPARSITY_TARGET on its own model copy, batch 1; bytes use the sparsity measured while timed."""
    loaded = load_model(spec)
    fp32_bytes = float(parameter_bytes(loaded.model))
    thresholds = thresholds_for(spec, calibration_per_cell)
    summary = sparsify_model(loaded.model, thresholds)
    site_bytes = sum(m.weight.numel() * m.weight.element_size() for m in sparse_modules(loaded.model))

    def bytes_per_step() -> float:  # counters are reset before each timed run: the last run's decode steps
        info["measured_decode_sparsity"] = measured_sparsity(loaded.model)
        return fp32_bytes - site_bytes * info["measured_decode_sparsity"]

    info: dict[str, Any] = {
        "target": SPARSITY_TARGET,
        "calibration_sparsity": thresholds.measured,
        "expected_weight_read_fraction": summary.expected_weight_read_fraction,
        "bytes_estimated": True,
    }
    return Config(SPARSE, 1, bytes_per_step, engine_measure(loaded, 1, lambda: reset_counters(loaded.model)), info)


# ---- timing --------------------------------------------------------------------------------------


def time_interleaved(configs: list[Config], threads: Sequence[int], reps: int, steps: int) -> dict[int, list[float]]:
    """Each config's samples per thread count (in `config.samples`), after one untimed warm-up each; returns
    the read-roofline probes per thread count (GB/s, one per repetition)."""
    meter = auto_meter()
    roofline: dict[int, list[float]] = {t: [] for t in threads}
    for t in threads:
        torch.set_num_threads(t)
        for c in configs:
            c.measure(2, meter)  # warm-up: first-call costs, allocator, kernel selection
        progress(f"  warm-up done at {t} thread(s)")
    for rep in range(reps):
        progress(f"  repetition {rep + 1}/{reps}")
        for t in threads if rep % 2 == 0 else list(reversed(threads)):
            torch.set_num_threads(t)
            roofline[t].append(read_bandwidth_gb_s("cpu", n_bytes=500_000_000, repeats=3))
            for c in configs if rep % 2 == 0 else list(reversed(configs)):
                c.samples.setdefault(t, []).append(c.measure(steps, meter))
    return roofline


def spread(values: Sequence[float]) -> dict[str, float | bool]:
    """Median and min-max; `includes_1` says the spread cannot tell the ratio from no change."""
    lo, hi = min(values), max(values)
    return {"median": statistics.median(values), "min": lo, "max": hi, "includes_1": lo <= 1.0 <= hi}


def paired(a: list[Sample], b: list[Sample]) -> dict[str, float | bool]:
    """Per-repetition tokens/s of a over b."""
    return spread([x.tokens_per_s / y.tokens_per_s for x, y in zip(a, b, strict=True)])


def config_row(c: Config, t: int, roofline_gb_s: float) -> dict[str, Any]:
    samples = c.samples[t]
    tps = statistics.median(s.tokens_per_s for s in samples)
    per_step = c.bytes_per_step()
    achieved = tps / c.batch * per_step / 1e9
    return {
        "tokens_per_s": spread([s.tokens_per_s for s in samples]),
        "ms_per_step": 1e3 * c.batch / tps,
        "weight_bytes_per_step": per_step,
        "achieved_gb_s": achieved,
        "roofline_fraction": achieved / roofline_gb_s,
        "j_per_token": statistics.median(s.energy_j / s.tokens for s in samples),
        "energy_provenance": samples[0].provenance,
        **c.info,
    }


# ---- quality -------------------------------------------------------------------------------------


def lean_gate(spec: str, mode: QuantMode, examples: list[Example], baseline: EvalReport) -> LeverGate:
    """`gate_lever`'s verdict and rule without its KL pass (which costs ~8 s on jp-large): for --quick."""
    cand = load_model(spec)
    summary = quantize_model(cand.model, mode)
    report = evaluate(cand, examples, EngineConfig(max_batch=32), max_tokens=GATE_MAX_TOKENS)
    skills = skill_drops(baseline, report)
    drop = 100 * (baseline.accuracy - report.accuracy)
    passed = drop <= 1.0 and all(s.drop_points <= 1.0 for s in skills)
    n = len(examples)
    agree = sum(a == b for a, b in zip(baseline.outputs, report.outputs, strict=True)) / n
    return LeverGate(
        spec, mode, passed, n, baseline.accuracy, report.accuracy, wilson_interval(round(report.accuracy * n), n),
        skills, agree, math.nan, summary.bytes_per_weight, 1.0, "lean gate (no KL)",
    )  # fmt: skip


def gate_levers(
    spec: str, per_cell: int, modes: Sequence[QuantMode], calibration_per_cell: int, lean: bool = False
) -> dict[str, Any]:
    """Each plain lever's gate and TEAL at SPARSITY_TARGET against fp32 on `gate_examples(per_cell)`; a cached
    verdict is reused; `lean` gates without the KL pass and stores nothing."""
    examples = gate_examples(per_cell)
    config = EngineConfig(max_batch=32)
    baseline: EvalReport = evaluate(load_model(spec), examples, config, max_tokens=GATE_MAX_TOKENS)
    n = len(examples)
    base_ci = wilson_interval(round(baseline.accuracy * n), n)
    out: dict[str, Any] = {
        "model": spec,
        "examples": n,
        "baseline_accuracy": baseline.accuracy,
        "baseline_ci95": base_ci,
        "levers": {},
    }
    for mode in modes:
        lever = Lever(mode)
        verdict = cached_gate(spec, lever, examples, 1.0)
        cached = verdict is not None
        if verdict is None and lean:
            verdict = lean_gate(spec, mode, examples, baseline)
        elif verdict is None:
            verdict = gate_lever(spec, lever, examples, 1.0, baseline)
            store_gate(verdict, examples)
        out["levers"][mode] = {
            "passed": verdict.passed,
            "accuracy": verdict.lever_accuracy,
            "accuracy_delta_pts": 0.0 - verdict.drop_points,  # 0.0 - : no "-0.0"
            "ci95": verdict.lever_ci95,
            "greedy_agreement": verdict.greedy_agreement,
            "mean_kl": verdict.mean_kl,
            "cached_verdict": cached,
            "rule": "overall and every skill drop <= 1 point (gate_lever)",
        }
    out["levers"][SPARSE] = gate_sparsity(spec, examples, baseline, calibration_per_cell)
    return out


def gate_sparsity(
    spec: str, examples: list[Example], baseline: EvalReport, calibration_per_cell: int
) -> dict[str, Any]:
    loaded = load_model(spec)
    sparsify_model(loaded.model, thresholds_for(spec, calibration_per_cell))
    cand = evaluate(loaded, examples, EngineConfig(max_batch=32), max_tokens=GATE_MAX_TOKENS)
    verdict = gate(baseline, cand, max_drop_points=1.0)
    n = len(examples)
    agree = sum(a == b for a, b in zip(baseline.outputs, cand.outputs, strict=True)) / n
    return {
        "passed": verdict.passed,
        "accuracy": cand.accuracy,
        "accuracy_delta_pts": 100 * (cand.accuracy - baseline.accuracy),
        "ci95": wilson_interval(round(cand.accuracy * n), n),
        "greedy_agreement": agree,
        "measured_sparsity": measured_sparsity(loaded.model),
        "cached_verdict": False,
        "rule": "overall drop <= 1 point (quality.evals.gate)",
    }


# ---- one model -----------------------------------------------------------------------------------


def measure_model(
    spec: str, threads: Sequence[int], reps: int, steps: int, batches: Sequence[int] = (1, 8),
    transformers: bool = True, transformers_fp32: bool = True, calibration_per_cell: int = CALIBRATION_PER_CELL,
) -> dict[str, Any]:  # fmt: skip
    """The per-model table: every config at every thread count, speedups paired per repetition."""
    configs, skipped = quant_configs(spec, batches)
    if 1 in batches:
        configs.append(sparse_config(spec, calibration_per_cell))
    hf_note = None
    if transformers:
        hf_configs, hf_note = transformers_configs(load_model(spec), batches, transformers_fp32)
        configs += hf_configs
    roofline = time_interleaved(configs, threads, reps, steps)
    by_key = {c.key: c for c in configs}
    table: dict[str, Any] = {"model": spec, "skipped_modes": skipped, "transformers_note": hf_note, "threads": {}}
    for t in threads:
        peak = max(roofline[t])
        rows = {c.key: config_row(c, t, peak) for c in configs}
        for c in configs:
            base = by_key.get(f"fp32@b{c.batch}")
            if base is not None and c is not base and not c.name.startswith("transformers"):
                rows[c.key]["speedup_vs_fp32"] = paired(c.samples[t], base.samples[t])
            hf = by_key.get(f"transformers_int8@b{c.batch}")
            if hf is not None and c is not hf:
                rows[c.key]["speedup_vs_transformers_int8"] = paired(c.samples[t], hf.samples[t])
        table["threads"][str(t)] = {"read_roofline_gb_s": peak, "roofline_probes_gb_s": roofline[t], "configs": rows}
    return table


def fastest(rows: dict[str, Any], batch: int, allowed: Callable[[str], bool]) -> str | None:
    """The lever with the highest median paired speedup over fp32 at `batch` among `allowed` ones."""
    cands = [
        (r["speedup_vs_fp32"]["median"], k.rpartition("@")[0])
        for k, r in rows.items()
        if k.endswith(f"@b{batch}") and k.rpartition("@")[0] not in ("fp32",) and not k.startswith("transformers")
        and allowed(k.rpartition("@")[0])
    ]  # fmt: skip
    return max(cands)[1] if cands else None


def add_best(table: dict[str, Any], passed: Callable[[str], bool]) -> None:
    """Mark the autotuned best lever at each batch and thread count (fastest among `passed`)."""
    for block in table["threads"].values():
        rows = block["configs"]
        block["best"] = {}
        for b in (1, 8):
            name = fastest(rows, b, passed)
            quant = fastest(rows, b, lambda n: n in ALL_MODES and passed(n))
            block["best"][f"b{b}"] = {"lever": name, "best_quantized": quant}


# ---- the whole run -------------------------------------------------------------------------------


def _median(rows: dict[str, Any], key: str, field_: str) -> float | None:
    row = rows.get(key)
    return None if row is None or field_ not in row else row[field_]["median"]


def headline(table: dict[str, Any], t: int, gates: dict[str, Any] | None) -> dict[str, Any]:
    """The flat keys issue 13 asks for, from one model at one thread count."""
    block = table["threads"][str(t)]
    rows, best = block["configs"], block["best"]
    b1, b1q = best["b1"]["lever"], best["b1"]["best_quantized"]
    hf_b1 = rows.get(f"{b1q}@b1", {}).get("speedup_vs_transformers_int8") if b1q else None
    levers = (gates or {}).get("levers", {})

    def delta(name: str) -> float | None:
        return levers[name]["accuracy_delta_pts"] if name in levers else None

    def route(routes: tuple[str, ...], batch: int) -> tuple[str | None, float | None]:
        """The fastest measured kernel route of one precision at `batch` (torch's or joulepath's VNNI)."""
        found = [(v, r) for r in routes if (v := _median(rows, f"{r}@b{batch}", "speedup_vs_fp32")) is not None]
        return (max(found)[1], max(found)[0]) if found else (None, None)

    int8_b1, int8_b8 = route(INT8_ROUTES, 1), route(INT8_ROUTES, 8)
    int4_b1, int4_b8 = route(INT4_MODES, 1), route(INT4_MODES, 8)
    per_mode = {f"{m}_speedup_b{b}": _median(rows, f"{m}@b{b}", "speedup_vs_fp32") for m in ALL_MODES for b in (1, 8)}
    return {
        "int8_speedup_b1": int8_b1[1],  # the fastest int8 route; which one is named beside it
        "int8_route_b1": int8_b1[0],
        "int4_speedup_b1": int4_b1[1],
        "int4_route_b1": int4_b1[0],
        "int8_speedup_b8": int8_b8[1],
        "int8_route_b8": int8_b8[0],
        "int4_speedup_b8": int4_b8[1],
        "int4_route_b8": int4_b8[0],
        **per_mode,
        "best_speedup_b1": _median(rows, f"{b1}@b1", "speedup_vs_fp32") if b1 else 1.0,
        "best_lever_b1": b1 or "fp32",
        "speedup_vs_transformers_int8": hf_b1["median"] if hf_b1 else None,
        "speedup_vs_transformers_int8_lever": b1q,
        "sparsity_speedup_b1": _median(rows, f"{SPARSE}@b1", "speedup_vs_fp32"),
        "int8_accuracy_delta_pts": delta(int8_b1[0] or "int8_dynamic"),  # of the route above
        "int4_accuracy_delta_pts": delta(int4_b1[0] or "int4_weight_only"),
        "sparsity_accuracy_delta_pts": delta(SPARSE),
    }


def goals(head: dict[str, Any], gates: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, (what, field_, minimum) in GOALS.items():
        value = head.get(field_)
        out[key] = {"goal": what, "value": value, "met": value is not None and value >= minimum}
    if gates is not None:
        on = [n for n, g in gates["levers"].items() if g["passed"]]
        worst = min((gates["levers"][n]["accuracy_delta_pts"] for n in on), default=None)
        out["quality"] = {
            "goal": "<= 1 point golden drop for every lever left on by default (gated on)",
            "value": worst,
            "levers_on": on,
            "met": all(gates["levers"][n]["accuracy_delta_pts"] >= -1.0 for n in on),
        }
    return out


_T0 = time.perf_counter()


def progress(what: str) -> None:
    print(f"[{time.perf_counter() - _T0:5.0f} s] {what}", file=sys.stderr, flush=True)


def run(
    models: Sequence[str], threads: Sequence[int], reps: int, steps: int, per_cell: int, quick: bool,
    transformers: bool = True,
) -> dict[str, Any]:  # fmt: skip
    t_start = time.perf_counter()
    calibration_per_cell = 1 if quick else CALIBRATION_PER_CELL
    gates = None
    if GATED_MODEL in models:
        torch.set_num_threads(min(threads))  # multi-threaded ops stall when another process shares the cores
        progress(f"quality gates on {GATED_MODEL}, gate_examples({per_cell})")
        modes = [m for m in ALL_MODES if available_modes()[m] is None]
        gates = gate_levers(GATED_MODEL, per_cell, modes, calibration_per_cell, lean=quick)
    tables = {}
    for m in models:
        progress(f"timing {m}")
        tables[m] = measure_model(
            m, threads, reps, steps, transformers=transformers, transformers_fp32=not quick,
            calibration_per_cell=calibration_per_cell if m == GATED_MODEL else 1,  # random weights: level only
        )  # fmt: skip
    passed_on_gated = {n for n, g in (gates or {}).get("levers", {}).items() if g["passed"]}
    for m, table in tables.items():
        add_best(table, (lambda n: n in passed_on_gated) if m == GATED_MODEL else (lambda n: True))
    head_model = HEADLINE_MODEL if HEADLINE_MODEL in tables else models[0]
    head_threads = 1 if 1 in threads else threads[0]
    head = headline(tables[head_model], head_threads, gates)
    other = {str(t): headline(tables[head_model], t, gates) for t in threads if t != head_threads}
    return {
        **head,
        "headline_model": head_model,
        "headline_threads": head_threads,
        "headline_at_other_threads": other,
        "goals": goals(head, gates),
        "models": tables,
        "quality_gate": gates,
        "settings": {
            "threads": list(threads),
            "repetitions": reps,
            "decode_steps": steps,
            "prompt_tokens": PROMPT_TOKENS,
            "gate_per_cell": per_cell,
            "calibration_per_cell": calibration_per_cell,
            "lean_gate": quick,
            "quick": quick,
            "sparsity_target": SPARSITY_TARGET,
        },
        "wall_s": time.perf_counter() - t_start,
        "machine": machine(),
    }


# ---- printing ------------------------------------------------------------------------------------


def _fmt(s: dict[str, Any] | None) -> str:
    if not s:
        return "-"
    note = " ~1" if s["includes_1"] else ""
    return f"{s['median']:.2f}x [{s['min']:.2f}-{s['max']:.2f}]{note}"


def report_model(table: dict[str, Any]) -> None:
    for t, block in table["threads"].items():
        print(f"\n{table['model']}, {t} thread(s), read roofline {block['read_roofline_gb_s']:.1f} GB/s")
        print(f"{'config':30}{'tok/s':>9}{'ms/step':>9}{'GB/s':>7}{'roof':>6}{'J/tok':>9}  "
              f"{'vs fp32 [min-max]':<24}{'vs transformers int8':<24}")  # fmt: skip
        for key, r in block["configs"].items():
            print(
                f"{key:30}{r['tokens_per_s']['median']:>9.1f}{r['ms_per_step']:>9.1f}{r['achieved_gb_s']:>7.1f}"
                f"{r['roofline_fraction']:>6.2f}{r['j_per_token']:>9.4f}  {_fmt(r.get('speedup_vs_fp32')):<24}"
                f"{_fmt(r.get('speedup_vs_transformers_int8')):<24}"
            )
        best = block.get("best", {})
        print("autotuned best: " + ", ".join(f"{b}: {v['lever']}" for b, v in best.items()))
    if table["skipped_modes"] or table["transformers_note"]:
        print(f"skipped: {table['skipped_modes']} {table['transformers_note'] or ''}")


def report(r: dict[str, Any]) -> None:
    s = r["settings"]
    m = r["machine"]
    print(
        f"{'QUICK run (fewer models, steps, reps and gate examples): indicative only. ' if s['quick'] else ''}"
        f"{m['cpu']}; threads {s['threads']}, {s['repetitions']} interleaved reps, {s['decode_steps']} decode steps "
        f"after a {s['prompt_tokens']}-token prefill; ratios: median [min-max] of paired reps, ~1: spread includes 1.0"
    )
    for table in r["models"].values():
        report_model(table)
    g = r["quality_gate"]
    if g:
        lo, hi = g["baseline_ci95"]
        print(
            f"\nquality gate, {g['model']}, {g['examples']} golden test examples: fp32 "
            f"{100 * g['baseline_accuracy']:.1f} % [{100 * lo:.1f}-{100 * hi:.1f}]"
        )
        for name, v in g["levers"].items():
            lo, hi = v["ci95"]
            print(
                f"  {name:20} {100 * v['accuracy']:.1f} % [{100 * lo:.1f}-{100 * hi:.1f}] "
                f"({v['accuracy_delta_pts']:+.1f} pts) {'PASS' if v['passed'] else 'FAIL'}; greedy agreement "
                f"{100 * v['greedy_agreement']:.0f} %{' (cached verdict)' if v['cached_verdict'] else ''}"
            )
    print(f"\nheadline ({r['headline_model']}, {r['headline_threads']} thread(s)):")
    for k in ("int8_speedup_b1", "int8_speedup_b8", "int4_speedup_b1", "best_speedup_b1", "sparsity_speedup_b1",
              "speedup_vs_transformers_int8", "int8_accuracy_delta_pts", "int4_accuracy_delta_pts",
              "sparsity_accuracy_delta_pts"):  # fmt: skip
        v = r[k]
        print(f"  {k:32} {'-' if v is None else f'{v:.3f}'}")
    print(f"  best lever b1: {r['best_lever_b1']}; vs transformers: {r['speedup_vs_transformers_int8_lever']}")
    for t, h in r["headline_at_other_threads"].items():
        keys = (
            "int8_speedup_b1",
            "int8_speedup_b8",
            "int4_speedup_b1",
            "best_speedup_b1",
            "sparsity_speedup_b1",
            "speedup_vs_transformers_int8",
        )
        print(f"  at {t} threads: " + ", ".join(f"{k} {'-' if h[k] is None else f'{h[k]:.2f}'}" for k in keys))
    print("goals:")
    for g in r["goals"].values():
        v = g["value"]
        print(f"  {'met    ' if g['met'] else 'NOT met'} {g['goal']} ({'-' if v is None else f'{v:.2f}'})")
    print(f"wall time {r['wall_s']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="jp-large, 1 thread, 8 steps, 2 reps, gate_examples(2)")
    parser.add_argument("--threads", type=int, default=None, help="one torch thread count (default 1 and 2; quick 1)")
    parser.add_argument("--models", nargs="+", default=None, help=f"default {HEADLINE_MODEL} and {GATED_MODEL}")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 3, quick 2)")
    parser.add_argument("--steps", type=int, default=None, help="timed decode steps (default 16, quick 8)")
    args = parser.parse_args(argv)
    models = args.models or ([GATED_MODEL] if args.quick else [HEADLINE_MODEL, GATED_MODEL])
    threads = [args.threads] if args.threads else ([1] if args.quick else [1, 2])
    reps = args.reps or (2 if args.quick else 3)
    steps = args.steps or (8 if args.quick else 16)
    result = run(models, threads, reps, steps, 2 if args.quick else 10, args.quick)
    report(result)
    print(f"wrote {write_result('quantize', result)}")
    return 0
