"""Real execution for the main job: the workload's first requests, served on this machine by the engine
with the scenario's model, once as a brute-force baseline (one request at a time) and once optimized
(continuous batching), then profiled.

Each request keeps the trace's arrival time (compressed to `serve.replay_s`); its content is a golden
dev-set task (the built-in models answer only those), so every served answer is also scored: the
accuracy of a configuration is measured on exactly the requests it served. Output lengths are the
model's own answers (up to `serve.max_tokens`), not the trace's.

On a shared machine one replay of each configuration is not enough: other load moves the numbers by
more than batching does. Each configuration is served `serve.repeats` times, interleaved (A B A B ...,
after an untimed warm-up), so both see the same conditions; every local ratio is the median of the
paired ratios (repetition i's optimized over its baseline) with its min-max spread, and a spread that
includes 1.0 is reported as no significant difference.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from joulepath.engine import Engine, EngineConfig, RequestRecord, SamplingParams
from joulepath.engine.context import check_output_fits, check_prompt_fits, context_tokens, model_label
from joulepath.meter import TIME_PROVENANCE, auto_meter
from joulepath.model import LoadedModel, load_model
from joulepath.profile import HotPathProfile, profile_engine
from joulepath.quality import golden
from joulepath.quality.tasks import SYSTEM_PROMPT, Example, chat_prompt, check
from joulepath.scenario import GuardSection, ServeSection
from joulepath.serving.guard import Guard, GuardPolicy
from joulepath.workload import Trace


@dataclass(frozen=True)
class ServedRequest:
    record: RequestRecord
    arrival_s: float  # in the replay's clock
    skill: str
    level: str
    correct: bool
    output_guard: str = "allow"  # the output filter's action


@dataclass(frozen=True)
class LocalRun:
    """One configuration served on this machine (measured, except energy where the meter estimates)."""

    name: str
    max_batch: int
    requests: tuple[ServedRequest, ...]
    wall_s: float
    energy_j: float
    energy_provenance: str
    accuracy: float
    blocked: tuple[str, ...] = ()  # request ids the input guard refused (never reached the engine)
    guard_s: float = 0.0  # time spent in the guardrails, measured
    accuracy_provenance: ClassVar[str] = "measured: each served answer checked against its golden dev-set answer"

    @property
    def output_tokens(self) -> int:
        return sum(r.record.output_tokens for r in self.requests)

    @property
    def j_per_token(self) -> float:
        return self.energy_j / max(self.output_tokens, 1)

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.wall_s if self.wall_s else 0.0

    def percentile(self, field: str, q: float) -> float:
        values = [getattr(r.record, field) for r in self.requests]
        return float(np.percentile(values, q)) if values else float("nan")


@dataclass(frozen=True)
class RatioSpread:
    """One local ratio, optimized / baseline, over interleaved repetitions: repetition i's optimized
    over repetition i's baseline (paired: both ran under the same load), with its median and min-max.

    `metric` names the LocalRun property; `provenance` is its label (for energy: the meter's, or
    `mixed: baseline's, optimized's` where the two differ)."""

    metric: str
    values: tuple[float, ...]
    provenance: str

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def low(self) -> float:
        return min(self.values, default=float("nan"))

    @property
    def high(self) -> float:
        return max(self.values, default=float("nan"))

    @property
    def spread_known(self) -> bool:
        """At least two repetitions: a spread to judge the difference by."""
        return len(self.values) >= 2

    @property
    def includes_one(self) -> bool:
        """The min-max spread includes 1.0: no significant difference measured."""
        return self.low <= 1.0 <= self.high


@dataclass(frozen=True)
class LocalComparison:
    """Baseline vs optimized served here. `baseline` / `optimized` are each configuration's median
    repetition (by energy per token); `*_runs` hold every repetition in the order served."""

    model: str
    device: str
    baseline: LocalRun
    optimized: LocalRun
    profile: HotPathProfile | None
    baseline_runs: tuple[LocalRun, ...] = ()
    optimized_runs: tuple[LocalRun, ...] = ()

    @property
    def repeats(self) -> int:
        return len(self.baseline_runs) or 1

    def pairs(self) -> list[tuple[LocalRun, LocalRun]]:
        """(baseline, optimized) per repetition, in the order served."""
        if self.baseline_runs and self.optimized_runs:
            return list(zip(self.baseline_runs, self.optimized_runs, strict=True))
        return [(self.baseline, self.optimized)]

    def ratio(self, metric: str) -> RatioSpread:
        """optimized / baseline of a LocalRun property (`j_per_token`, `tokens_per_s`, `ttft_p99_s`)."""
        values = tuple(_ratio(_metric(o, metric), _metric(b, metric)) for b, o in self.pairs())
        finite = tuple(v for v in values if np.isfinite(v))
        provenance = self.optimized.energy_provenance if metric == "j_per_token" else TIME_PROVENANCE
        if metric == "j_per_token" and self.baseline.energy_provenance != self.optimized.energy_provenance:
            provenance = f"mixed: {self.baseline.energy_provenance}, {self.optimized.energy_provenance}"
        return RatioSpread(metric, finite, provenance)

    def ratios(self) -> tuple[RatioSpread, ...]:
        """Every local ratio: energy per token, throughput, p99 time to first token."""
        return tuple(self.ratio(m) for m in LOCAL_RATIOS)


LOCAL_RATIOS = ("j_per_token", "tokens_per_s", "ttft_p99_s")


def _metric(run: LocalRun, metric: str) -> float:
    return run.percentile("ttft_s", 99) if metric == "ttft_p99_s" else float(getattr(run, metric))


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator; NaN where undefined (a zero or non-finite side)."""
    if not (np.isfinite(numerator) and np.isfinite(denominator)) or denominator == 0:
        return float("nan")
    return numerator / denominator


def median_run(runs: list[LocalRun]) -> LocalRun:
    """The repetition with the median energy per token (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r.j_per_token)
    return ordered[(len(ordered) - 1) // 2]


def requests_for(trace: Trace, serve: ServeSection, seed: int) -> tuple[np.ndarray, list[Example]]:
    """Arrival times (seconds from 0, compressed to `replay_s`) and a golden task for each request."""
    n = min(serve.requests, len(trace))
    arrivals = trace.arrival_s[:n] - trace.arrival_s[0]
    span = float(arrivals[-1]) if n > 1 else 0.0
    if span > 0:
        arrivals = arrivals * (serve.replay_s / span)
    pool = golden.load("dev")
    examples = random.Random(seed).sample(pool, n) if n <= len(pool) else random.Random(seed).choices(pool, k=n)
    return arrivals, examples


def replay(
    loaded: LoadedModel,
    name: str,
    max_batch: int,
    arrivals: np.ndarray,
    examples: list[Example],
    max_tokens: int,
    guard: Guard | None = None,
) -> LocalRun:
    """Serve the requests as they arrive (through the guard when given); the meter covers the whole
    replay, idle gaps included."""
    meter = auto_meter()
    engine = Engine(loaded, EngineConfig(max_batch=max_batch), meter)
    params = SamplingParams(max_tokens=max_tokens, stop=("<|end|>",))
    blocked: list[str] = []
    guard_s = 0.0
    meter.begin("replay")
    t0, i, n = time.perf_counter(), 0, len(examples)
    while i < n or engine.has_work():
        now = time.perf_counter() - t0
        while i < n and arrivals[i] <= now:
            g0 = time.perf_counter()
            decision = guard.check_input(examples[i].user_text) if guard else None
            guard_s += time.perf_counter() - g0
            if decision is not None and decision.blocked:
                blocked.append(f"r{i}")
            else:
                engine.add_request(chat_prompt(examples[i]), params, request_id=f"r{i}")
            i += 1
        if engine.has_work():
            engine.step()
        elif i < n:
            time.sleep(min(float(arrivals[i]) - now, 0.05))
    wall = time.perf_counter() - t0
    window = meter.end("replay")
    by_id = {r.request_id: r for r in engine.records}
    served = []
    for k, ex in enumerate(examples):
        rid = f"r{k}"
        if rid not in by_id:
            continue
        text, action = engine.text_of(rid), "allow"
        if guard:
            g0 = time.perf_counter()
            out = guard.check_output(text)
            guard_s += time.perf_counter() - g0
            text, action = (text if out.action == "allow" else out.text), out.action
        served.append(ServedRequest(by_id[rid], float(arrivals[k]), ex.skill, ex.level, check(ex, text), action))
    accuracy = sum(s.correct for s in served) / max(len(served), 1)
    return LocalRun(
        name, max_batch, tuple(served), wall, window.total_energy_j, window.provenance_summary, accuracy,
        tuple(blocked), guard_s,
    )  # fmt: skip


def guard_for(section: GuardSection) -> Guard | None:
    if not section.enabled:
        return None
    fields = {k: v for k, v in section.model_dump().items() if k != "enabled"}
    return Guard(GuardPolicy(**fields, system_prompt=SYSTEM_PROMPT))


WARM_UP_REQUESTS = 8  # served once, untimed, before the first repetition: allocator, threads, caches


def serve_interleaved(
    loaded: LoadedModel,
    arrivals: np.ndarray,
    examples: list[Example],
    serve: ServeSection,
    guard: Guard | None,
    progress: Callable[[str], None] = lambda _: None,
) -> tuple[list[LocalRun], list[LocalRun]]:
    """Serve the baseline and the optimized configuration `serve.repeats` times each, interleaved
    (A B A B ...), after an untimed warm-up; returns (baselines, optimizeds) in the order served."""
    warm = min(WARM_UP_REQUESTS, len(examples))
    replay(loaded, "warm-up", serve.max_batch, np.zeros(warm), examples[:warm], serve.max_tokens, guard)
    configs = (("baseline", 1, "one at a time"), ("optimized", serve.max_batch, "continuous batching"))
    runs: dict[str, list[LocalRun]] = {"baseline": [], "optimized": []}
    for k in range(serve.repeats):
        for name, max_batch, how in configs:
            progress(f"serving {len(examples)} requests on {serve.model}: {name} ({how}), {k + 1} of {serve.repeats}")
            runs[name].append(replay(loaded, name, max_batch, arrivals, examples, serve.max_tokens, guard))
    return runs["baseline"], runs["optimized"]


def check_context(loaded: LoadedModel, examples: list[Example], max_tokens: int) -> None:
    """Refuse, before anything is served, a request that does not fit the model's context: a prompt with
    no room for an answer, or `serve.max_tokens` running past the context after the longest prompt (the
    engine would cap it per request; a scenario's setting is refused instead, so no answer is cut short)."""
    context, name = context_tokens(loaded.config), model_label(loaded.source)
    lengths = [len(loaded.tokenizer.encode(chat_prompt(e))) for e in examples]
    for k, n in enumerate(lengths):
        task = f"{examples[k].skill}/{examples[k].level}"
        check_prompt_fits(n, context, name, f"served request r{k} (golden task {task})")
    check_output_fits(max(lengths, default=0), max_tokens, context, name, "serve.max_tokens")


def serve_locally(
    trace: Trace,
    serve: ServeSection,
    seed: int,
    progress: Callable[[str], None] = lambda _: None,
    guard_section: GuardSection | None = None,
) -> LocalComparison:
    loaded = load_model(serve.model)
    arrivals, examples = requests_for(trace, serve, seed)
    check_context(loaded, examples, serve.max_tokens)
    guard = guard_for(guard_section) if guard_section else None
    baselines, optimizeds = serve_interleaved(loaded, arrivals, examples, serve, guard, progress)
    prof = None
    if serve.profile:
        progress("hot-path profile")
        prof = profile_engine(
            loaded, [chat_prompt(e) for e in examples], config=EngineConfig(max_batch=serve.max_batch)
        )
    device = str(next(loaded.model.parameters()).device)
    baseline, optimized = median_run(baselines), median_run(optimizeds)
    return LocalComparison(serve.model, device, baseline, optimized, prof, tuple(baselines), tuple(optimizeds))
