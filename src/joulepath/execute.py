"""Real execution for the main job: the workload's first requests, served on this machine by the engine
with the scenario's model, once as a brute-force baseline (one request at a time) and once optimized
(continuous batching), then profiled.

Each request keeps the trace's arrival time (compressed to `serve.replay_s`); its content is a golden
dev-set task (the built-in models answer only those), so every served answer is also scored: the
accuracy of a configuration is measured on exactly the requests it served. Output lengths are the
model's own answers (up to `serve.max_tokens`), not the trace's.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from joulepath.engine import Engine, EngineConfig, RequestRecord, SamplingParams
from joulepath.meter import auto_meter
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
class LocalComparison:
    model: str
    device: str
    baseline: LocalRun
    optimized: LocalRun
    profile: HotPathProfile | None


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


def serve_locally(
    trace: Trace,
    serve: ServeSection,
    seed: int,
    progress: Callable[[str], None] = lambda _: None,
    guard_section: GuardSection | None = None,
) -> LocalComparison:
    loaded = load_model(serve.model)
    arrivals, examples = requests_for(trace, serve, seed)
    guard = guard_for(guard_section) if guard_section else None
    progress(f"serving {len(examples)} requests on {serve.model}: baseline (one at a time)")
    baseline = replay(loaded, "baseline", 1, arrivals, examples, serve.max_tokens, guard)
    progress(f"serving {len(examples)} requests on {serve.model}: optimized (continuous batching)")
    optimized = replay(loaded, "optimized", serve.max_batch, arrivals, examples, serve.max_tokens, guard)
    prof = None
    if serve.profile:
        progress("hot-path profile")
        prof = profile_engine(
            loaded, [chat_prompt(e) for e in examples], config=EngineConfig(max_batch=serve.max_batch)
        )
    device = str(next(loaded.model.parameters()).device)
    return LocalComparison(serve.model, device, baseline, optimized, prof)
