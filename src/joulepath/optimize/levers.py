"""Levers applied after a model loads, each behind the quality gate: a lever is used only where it passes.

A lever is named by a string (`int8_dynamic`, `int8_weight_only`, `int4_weight_only`, `int4_weight_only:g32`,
joulepath's own VNNI kernels `int8_vnni`, `int4_vnni`, `int4_vnni:g64`;
a skip list after `+skip=`, e.g. `int8_dynamic+skip=output`). `gate_lever` serves the same golden
examples with the model as loaded (fp32) and with the lever applied, and passes the lever when golden
accuracy drops by at most `max_drop_points` overall *and* in every skill (Wilson 95 % intervals
reported); greedy agreement with fp32 and the mean KL divergence of next-token distributions (teacher-
forced on the prompts and fp32's answers) are reported beside it. `choose_lever` tries a mode as is, then
with the gate-chosen opt-outs (the LM head, then the down-projections too) and keeps the first that
passes. Gate results are cached per model weights, lever, example set and torch version
(`~/.cache/joulepath/gates/`), because a gate costs minutes of CPU and changes only when those do.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from joulepath.engine import EngineConfig, row_attention
from joulepath.model import DenseCausalAttention, LoadedModel, load_model
from joulepath.optimize import vnni
from joulepath.optimize.quant import ALL_MODES, INT4_MODES, VNNI_MODES, QuantMode, quantize_model
from joulepath.quality.evals import EvalReport, evaluate, wilson_interval
from joulepath.quality.tasks import Example, chat_prompt
from joulepath.results import LeverGate, SkillDrop

OPT_OUTS: tuple[tuple[str, ...], ...] = ((), ("output",), ("output", "w2"))  # tried in this order
GATE_MAX_TOKENS = 24  # longest golden answer the gate serves
GATE_VERSION = 2  # bump when the gate's rule, its measurement or a lever's numerics change: cached verdicts are ignored


@dataclass(frozen=True)
class Lever:
    """A parsed lever name: a weight quantization mode, or `teal` activation sparsity at `target`."""

    mode: QuantMode | Literal["teal", "kv_int8"]
    group_size: int = 128
    skip: tuple[str, ...] = ()
    target: float = 0.0  # teal only: share of projection inputs zeroed

    @property
    def name(self) -> str:
        if self.mode == "teal":
            return f"teal:{self.target:g}"
        if self.mode == "kv_int8":
            return "kv_int8"
        group = f":g{self.group_size}" if self.mode in INT4_MODES and self.group_size != 128 else ""
        return self.mode + group + (f"+skip={','.join(self.skip)}" if self.skip else "")


def parse_lever(name: str) -> Lever:
    """`int8_dynamic`, `int4_weight_only:g32`, `int8_dynamic+skip=output,w2`, `teal:0.4` -> Lever (clear errors)."""
    if name == "kv_int8":
        return Lever("kv_int8")
    if name.startswith("teal:"):
        try:
            target = float(name.removeprefix("teal:"))
        except ValueError:
            target = -1.0
        if not 0 < target < 1:
            raise ValueError(f"lever {name!r}: teal needs a target sparsity in (0, 1), e.g. teal:0.4")
        return Lever("teal", target=target)
    head, _, skip = name.partition("+skip=")
    mode, _, group = head.partition(":g")
    if mode not in ALL_MODES:
        raise ValueError(
            f"unknown lever {name!r}: the mode must be one of {', '.join(ALL_MODES)}, teal:<target> or kv_int8"
        )
    if group and (mode not in INT4_MODES or not group.isdigit()):
        raise ValueError(
            f"lever {name!r}: ':g<group size>' applies to {' and '.join(INT4_MODES)} only, e.g. int4_weight_only:g64"
        )
    return Lever(mode, int(group) if group else 128, tuple(s for s in skip.split(",") if s))


CALIBRATION_PROMPTS = 64  # golden dev prompts TEAL's thresholds are calibrated on (the gate uses the test split)


def apply_lever(loaded: LoadedModel, lever: Lever) -> float | None:
    """Apply `lever` to `loaded.model` in place (callers load a fresh copy for it); returns the bytes per
    weight it leaves (None: unchanged, as loaded). `kv_int8` changes the engine, not the model: see
    `engine_config_for`."""
    if lever.mode == "kv_int8":
        return None
    if lever.mode == "teal":
        from joulepath.optimize.sparsity import calibrate, sparsify_model
        from joulepath.quality import golden

        prompts = [chat_prompt(e) for e in golden.load("dev")[::15][:CALIBRATION_PROMPTS]]
        sparsify_model(loaded.model, calibrate(loaded, prompts, lever.target))
        return None
    return quantize_model(loaded.model, lever.mode, skip=lever.skip, group_size=lever.group_size).bytes_per_weight


def engine_config_for(lever: Lever | None, max_batch: int = 32) -> EngineConfig:
    """The engine a lever's answers (None: the unoptimized model's) are served with (the int8 KV cache is an
    engine setting)."""
    return EngineConfig(max_batch=max_batch, kv_int8=lever is not None and lever.mode == "kv_int8")


def baseline_report(spec: str, examples: list[Example]) -> EvalReport:
    """The model as loaded, served on the gate's examples: what every lever is compared with."""
    return evaluate(load_model(spec), examples, engine_config_for(None), max_tokens=GATE_MAX_TOKENS)


def param_bytes(loaded: LoadedModel) -> float:
    """Bytes per weight of a model as loaded (its parameters' element size)."""
    return float(next(loaded.model.parameters()).element_size())


def gate_examples(per_cell: int, split: str = "test") -> list[Example]:
    """The first `per_cell` golden examples of every (skill, level) of `split` (held out from calibration)."""
    from joulepath.quality import golden

    cells: dict[tuple[str, str], list[Example]] = {}
    for e in golden.load(split):
        cells.setdefault((e.skill, e.level), []).append(e)
    return [e for group in cells.values() for e in group[:per_cell]]


def skill_drops(base: EvalReport, cand: EvalReport) -> tuple[SkillDrop, ...]:
    out = []
    for skill in sorted({c.skill for c in base.cells}):
        b = [c for c in base.cells if c.skill == skill]
        c = [cand.cell(x.skill, x.level) for x in b]
        n = sum(x.n for x in b)
        kb, kc = sum(x.correct for x in b), sum(x.correct for x in c)
        out.append(SkillDrop(skill, n, kb / n, kc / n, wilson_interval(kc, n)))
    return tuple(out)


@torch.inference_mode()
def mean_kl(base: LoadedModel, cand: LoadedModel, examples: Sequence[Example], answers: Sequence[str]) -> float:
    """Mean KL(fp32 || lever) of next-token distributions over every prompt and answer position, teacher-
    forced on fp32's answers (one dense forward per example on each model)."""
    total, count = 0.0, 0
    for ex, answer in zip(examples, answers, strict=True):
        ids = base.tokenizer.encode(chat_prompt(ex) + answer)
        tokens = torch.tensor(ids)
        positions = torch.arange(len(ids))
        p = base.model(tokens, positions, DenseCausalAttention([len(ids)])).float().log_softmax(-1)
        q = cand.model(tokens, positions, DenseCausalAttention([len(ids)])).float().log_softmax(-1)
        total += float(F.kl_div(q, p, log_target=True, reduction="sum"))
        count += len(ids)
    return total / max(count, 1)


def gate_lever(
    spec: str, lever: Lever, examples: list[Example], max_drop_points: float = 1.0, baseline: EvalReport | None = None
) -> LeverGate:
    """Serve `examples` greedily with the model as loaded and with `lever` applied; pass or refuse it."""
    base = load_model(spec)
    base_report = baseline or evaluate(base, examples, engine_config_for(None), max_tokens=GATE_MAX_TOKENS)
    cand = load_model(spec)
    bytes_per_weight = apply_lever(cand, lever) or param_bytes(cand)
    cand_report = evaluate(cand, examples, engine_config_for(lever), max_tokens=GATE_MAX_TOKENS)
    skills = skill_drops(base_report, cand_report)
    drop = 100 * (base_report.accuracy - cand_report.accuracy)
    bad = [s for s in skills if s.drop_points > max_drop_points]
    passed = drop <= max_drop_points and not bad
    agree = sum(a == b for a, b in zip(base_report.outputs, cand_report.outputs, strict=True)) / len(examples)
    # The KV cache is not on the dense teacher-forced path: for kv_int8 the KL is not measured (NaN).
    kl = float("nan") if lever.mode == "kv_int8" else mean_kl(base, cand, examples[:48], base_report.outputs[:48])
    n_correct = round(cand_report.accuracy * len(examples))
    lines = [
        f"{'PASS' if passed else 'FAIL'} {lever.name} on {spec}: golden accuracy "
        f"{100 * base_report.accuracy:.1f} % -> {100 * cand_report.accuracy:.1f} % ({-drop:+.1f} points; allowed "
        f"-{max_drop_points:g} overall and per skill), {len(examples)} held-out examples",
        *(
            f"  {s.skill}: {100 * s.baseline:.1f} % -> {100 * s.lever:.1f} % ({-s.drop_points:+.1f} points)"
            for s in skills
            if s.baseline != s.lever
        ),
        f"  greedy agreement with fp32 {100 * agree:.1f} %; mean KL {kl:.4f} nats; {bytes_per_weight:.3f} bytes/weight",
    ]
    return LeverGate(
        spec, lever.name, passed, len(examples), base_report.accuracy, cand_report.accuracy,
        wilson_interval(n_correct, len(examples)), skills, agree, kl, bytes_per_weight, max_drop_points,
        "\n".join(lines),
    )  # fmt: skip


def choose_lever(
    spec: str, lever: str, examples: list[Example], max_drop_points: float = 1.0, use_cache: bool = True
) -> list[LeverGate]:
    """Gate `lever` (a name, see `parse_lever`) as is, then, for a quantization mode, with each opt-out
    list, stopping at the first that passes; every verdict is returned (the last one passed, or none did)."""
    base = parse_lever(lever)
    tries = (
        [base] if base.mode == "teal" or base.skip else [Lever(base.mode, base.group_size, skip) for skip in OPT_OUTS]
    )
    verdicts: list[LeverGate] = []
    baseline: EvalReport | None = None
    for candidate in tries:
        verdict = cached_gate(spec, candidate, examples, max_drop_points) if use_cache else None
        if verdict is None:
            if baseline is None:
                baseline = baseline_report(spec, examples)
            verdict = gate_lever(spec, candidate, examples, max_drop_points, baseline)
            if use_cache:
                store_gate(verdict, examples)
        verdicts.append(verdict)
        if verdict.passed:
            break
    return verdicts


# ---- the verdict cache ----------------------------------------------------------------------------


def cache_dir() -> Path:
    root = os.environ.get("JOULEPATH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "joulepath")
    return Path(root) / "gates"


def weights_digest(spec: str) -> str:
    """What identifies the weights: the checkpoint files' sizes and modification times, or the dummy spec."""
    from joulepath.model.checkpoint import ZOO_MODELS, zoo_path

    folder = zoo_path(spec) if spec in ZOO_MODELS else Path(spec)
    if not folder.is_dir():
        return spec
    stamp = [(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in sorted(folder.glob("*.safetensors"))]
    return hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:16]


def _key(spec: str, lever: Lever, examples: list[Example], max_drop: float) -> str:
    ident = [GATE_VERSION, spec, weights_digest(spec), lever.name, max_drop, torch.__version__]
    if lever.mode in VNNI_MODES:  # joulepath's own kernels: a verdict holds for the kernel source it was reached on
        ident.append(vnni.source_digest())
    ident.append(hashlib.sha256(row_attention.SOURCE.read_bytes()).hexdigest()[:16])  # the engine's CPU attention
    ident.append(hashlib.sha256("\n".join(e.question for e in examples).encode()).hexdigest()[:16])
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:24]


def cached_gate(spec: str, lever: Lever, examples: list[Example], max_drop: float) -> LeverGate | None:
    path = cache_dir() / f"{_key(spec, lever, examples, max_drop)}.json"
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
        d["skills"] = tuple(SkillDrop(**{**s, "ci95": tuple(s["ci95"])}) for s in d["skills"])
        d["lever_ci95"] = tuple(d["lever_ci95"])
        return LeverGate(**d)
    except (ValueError, TypeError, KeyError):
        return None  # an unreadable entry is a miss: the gate runs again and rewrites it


def store_gate(verdict: LeverGate, examples: list[Example]) -> None:
    path = cache_dir() / f"{_key(verdict.model, parse_lever(verdict.lever), examples, verdict.max_drop_points)}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(verdict)))
        tmp.replace(path)
    except OSError:
        pass  # a read-only home: the verdict is simply not cached
