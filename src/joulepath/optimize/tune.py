"""Kernel-level tuning by measurement: which thread count, eager or compiled decode, and which weight
format decode fastest for one model on the machine at hand (the per-machine autotuning of vLLM's and
torch inductor's kernel choices, at the level joulepath controls).

Every candidate decodes the same prompt batch-1 on the static path (`engine.static_decode`: the path
`torch.compile` can capture), interleaved over repetitions so load changes hit all alike; the median
decode tokens/s with its min-max spread is kept. A quantized candidate may be *chosen* only if its
quality gate passed (a cached verdict of `optimize.levers`, same model and gate examples): speed never
buys an unchecked accuracy loss; an ungated one is still measured and reported as such. Results are
cached per machine (CPU/GPU name, usable cores, torch version) and model weights in
`~/.cache/joulepath/tune/`, and `joulepath tune` prints them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from joulepath.engine.sampling import SamplingParams
from joulepath.engine.static_decode import generate_static
from joulepath.model import LoadedModel, load_model
from joulepath.optimize.levers import Lever, apply_lever, cache_dir, cached_gate, gate_examples, weights_digest
from joulepath.optimize.quant import ALL_MODES, available_modes

PROMPT_TOKENS = 32
SHORT = {
    "int8_dynamic": "int8-dyn",
    "int8_weight_only": "int8-wo",
    "int4_weight_only": "int4-wo",
    "int8_vnni": "int8-vnni",
    "int4_vnni": "int4-vnni",
}
TUNE_VERSION = 2


@dataclass(frozen=True)
class Candidate:
    threads: int
    compiled: bool
    weights: str  # "fp32" or a lever name

    @property
    def name(self) -> str:
        return f"{SHORT.get(self.weights, self.weights)} {self.threads}t {'compiled' if self.compiled else 'eager'}"


@dataclass(frozen=True)
class Measured:
    candidate: Candidate
    tokens_per_s: float  # median decode tokens/s over the repetitions (measured)
    low: float
    high: float
    gate: str  # "passed" | "refused" | "ungated" | "n/a" (fp32)
    error: str = ""  # a candidate that could not run says why (e.g. compile failed)

    @property
    def eligible(self) -> bool:
        return not self.error and self.gate in ("passed", "n/a")


@dataclass(frozen=True)
class TuneResult:
    model: str
    machine: str
    date_utc: str
    tokens: int
    repetitions: int
    default_threads: int  # torch's thread count when the tune ran: the untuned baseline's
    measured: tuple[Measured, ...]

    @property
    def best(self) -> Measured:
        """The fastest candidate allowed to be used (gate passed, or unquantized)."""
        return max((m for m in self.measured if m.eligible), key=lambda m: m.tokens_per_s)

    @property
    def baseline(self) -> Measured:
        """fp32, eager, at torch's default thread count: what runs without tuning."""
        return next(m for m in self.measured if m.candidate == Candidate(self.default_threads, False, "fp32"))


def machine_key() -> str:
    from joulepath.hw.catalog import cpu_model_name

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu_model_name()
    return f"{device}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}"


def candidates(thread_counts: Sequence[int], compile_too: bool, modes: Sequence[str]) -> list[Candidate]:
    out = []
    for weights in ("fp32", *modes):
        for threads in thread_counts:
            out.append(Candidate(threads, False, weights))
            if compile_too:
                out.append(Candidate(threads, True, weights))
    return out


def _gate_of(spec: str, weights: str, examples_per_cell: int) -> str:
    if weights == "fp32":
        return "n/a"
    verdict = cached_gate(spec, Lever(weights), gate_examples(examples_per_cell), 1.0)  # type: ignore[arg-type]
    if verdict is None:
        return "ungated"
    return "passed" if verdict.passed else "refused"


def _decode_tokens_per_s(loaded: LoadedModel, candidate: Candidate, tokens: int) -> float:
    torch.set_num_threads(candidate.threads)
    prompt = [(1000 + i) % loaded.config.vocab_size for i in range(PROMPT_TOKENS)]
    params = SamplingParams(max_tokens=tokens, ignore_eos=True)
    result = generate_static(loaded.model, prompt, params, compile_decode=candidate.compiled)
    return result.decode_tokens_per_s


def tune(
    spec: str,
    thread_counts: Sequence[int] | None = None,
    compile_too: bool = True,
    reps: int = 3,
    tokens: int = 32,
    gate_per_cell: int = 10,
    progress: Callable[[str], None] = lambda _: None,
) -> TuneResult:
    """Measure every candidate (interleaved, `reps` times after a warm-up each) and return them all."""
    default_threads = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0))
    threads = sorted(set(thread_counts or {1, cores}) | {default_threads})  # the default: the untuned baseline
    modes = [m for m in ALL_MODES if available_modes().get(m) is None]  # torch's kernels and joulepath's VNNI ones
    cands = candidates(threads, compile_too, modes)
    models: dict[str, LoadedModel] = {}
    errors: dict[Candidate, str] = {}
    for weights in ("fp32", *modes):
        loaded = load_model(spec)
        try:
            if weights != "fp32":
                apply_lever(loaded, Lever(weights))  # type: ignore[arg-type]
            models[weights] = loaded
        except ValueError as exc:
            errors.update({c: str(exc) for c in cands if c.weights == weights})
    runs: dict[Candidate, list[float]] = {c: [] for c in cands}
    try:
        for c in cands:  # warm-up: compile, allocator, fbgemm packing
            if c in errors:
                continue
            progress(f"warm-up: {c.name}")
            try:
                _decode_tokens_per_s(models[c.weights], c, min(tokens, 8))
            except Exception as exc:  # a compiler or kernel failure marks the candidate; the tune goes on
                errors[c] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        for rep in range(reps):
            progress(f"repetition {rep + 1} of {reps}")
            for c in cands:
                if c not in errors:
                    runs[c].append(_decode_tokens_per_s(models[c.weights], c, tokens))
    finally:
        torch.set_num_threads(default_threads)
    measured = tuple(
        Measured(
            c,
            statistics.median(runs[c]) if runs[c] else 0.0,
            min(runs[c], default=0.0),
            max(runs[c], default=0.0),
            _gate_of(spec, c.weights, gate_per_cell),
            errors.get(c, ""),
        )
        for c in cands
    )
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    return TuneResult(spec, machine_key(), date, tokens, reps, default_threads, measured)


# ---- the per-machine cache -------------------------------------------------------------------------


def tune_path(spec: str) -> Path:
    key = json.dumps([TUNE_VERSION, machine_key(), spec, weights_digest(spec)])
    return cache_dir().parent / "tune" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def store(result: TuneResult) -> Path:
    path = tune_path(result.model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(result)))
    tmp.replace(path)
    return path


def load_cached(spec: str) -> TuneResult | None:
    """This machine's tuning of `spec`'s current weights, if `joulepath tune` has run (None otherwise)."""
    path = tune_path(spec)
    if not path.is_file():
        return None
    try:
        d: dict[str, Any] = json.loads(path.read_text())
        measured = tuple(Measured(**{**m, "candidate": Candidate(**m["candidate"])}) for m in d["measured"])
        return dataclasses.replace(TuneResult(**{**d, "measured": ()}), measured=measured)
    except (ValueError, TypeError, KeyError):
        return None
