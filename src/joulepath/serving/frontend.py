"""The one path a request takes, from whoever sends it (the main job, a benchmark, the profiler, later an
HTTP server) to its text, tokens and joules:

    submit(Request)
      -> input guard              serving/guard.py: blocked -> a Response with the refusal, no engine
      -> (semantic cache)         later: a hit answers here, before any engine work (see `submit`)
      -> (router)                 later: picks the engine (model tier, replica); today the one engine
      -> engine.add_request       engine/engine.py: paged KV, continuous batching
    step()
      -> engine.step()            token ids and finish flags (speculative proposals plug in at the
                                  scheduler: ScheduledChunk.draft_tokens)
      -> incremental detokenizer  engine/detokenize.py: new ids only, stop strings on the new text only
      -> output guard             on each finished text
      -> Response                 text, output ids, the engine's RequestRecord (TTFT, TPOT, joules with
                                  their provenance)

`replay(arrivals)` serves a trace on its own clock: a request is submitted once its arrival time (from
the replay's start) has passed, steps run while work is pending, and idle time sleeps until the next
arrival. One meter window covers the whole replay, idle gaps included; each request's energy is its
share of the engine's per-step windows.

    >>> from joulepath.engine import Engine, SamplingParams
    >>> from joulepath.model import load_model
    >>> frontend = Frontend(Engine(load_model("dummy:tiny-llama")))
    >>> result = frontend.replay([Arrival(0.0, Request("hi", SamplingParams(max_tokens=3, ignore_eos=True)))])
    >>> [r.record.output_tokens for r in result.responses if r.record]
    [3]
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from joulepath.engine import Engine, RequestRecord, SamplingParams
from joulepath.engine.scopes import STEP, scope
from joulepath.serving.guard import Decision, Guard


@dataclass(frozen=True)
class Request:
    """One request as a client sends it."""

    prompt: str | tuple[int, ...]  # what the engine sees (a rendered chat prompt, or token ids)
    params: SamplingParams = field(default_factory=SamplingParams)
    priority: str = "interactive"
    request_id: str | None = None  # None: the frontend names it
    # The user's own words inside `prompt`, which the input guard checks (a system prompt is not the
    # user's); None: a text prompt is checked whole, token ids are not checked.
    user_text: str | None = None


@dataclass(frozen=True)
class Arrival:
    """A request and when it arrives, in seconds from the start of a replay."""

    at_s: float
    request: Request


@dataclass(frozen=True)
class Response:
    """A finished request. `record` is None when the input guard refused it (it never reached the engine)."""

    request_id: str
    text: str  # after the output guard; the refusal when blocked
    output_ids: tuple[int, ...]
    record: RequestRecord | None
    input_guard: Decision | None = None  # None: no guard, or nothing to check
    output_guard: Decision | None = None

    @property
    def blocked(self) -> bool:
        return self.record is None


@dataclass(frozen=True)
class ReplayResult:
    """A replayed trace: every response (in the order they finished) and what the replay cost."""

    responses: tuple[Response, ...]
    wall_s: float  # first arrival's clock start -> last response
    busy_s: float  # inside serving steps (the rest is idle: waiting for arrivals)
    steps: int
    energy_j: float  # the meter's window over the whole replay, idle included
    energy_provenance: str
    guard_s: float  # spent in the input and output guards, measured


class Frontend:
    """Guards, engine and text for a stream of requests. Not thread-safe: one caller drives it."""

    def __init__(self, engine: Engine, guard: Guard | None = None) -> None:
        self.engine, self.guard = engine, guard
        self.texts = engine.text_stage()
        self.guard_s = 0.0
        self._ids = itertools.count()
        self._input: dict[str, Decision | None] = {}
        self._done: list[Response] = []  # refusals, answered at the next step

    def submit(self, request: Request) -> str:
        """Queue a request; returns its id. A refused request is answered by the next `step()`. Raises
        what the engine raises for a request it cannot serve (ValueError, ContextLengthError)."""
        rid = request.request_id or f"fe-{next(self._ids)}"
        decision = self._check_input(request)
        if decision is not None and decision.blocked:
            self._done.append(Response(rid, decision.text, (), None, decision))
            return rid
        # Semantic cache (later): look the guarded prompt up here; a hit appends its Response to
        # self._done and returns, so no engine sees it.
        engine = self.engine  # Router (later): choose among engines by model tier, load or prefix locality.
        engine.add_request(_guarded_prompt(request, decision), request.params, request.priority, rid)
        self.texts.open(rid, request.params)
        self._input[rid] = decision
        return rid

    def has_work(self) -> bool:
        return self.engine.has_work() or bool(self._done)

    def step(self) -> list[Response]:
        """One engine step, its tokens as text, and the requests it finished (plus any refusals)."""
        with scope(STEP):
            if self.engine.has_work():
                for delta in self.engine.step_text(self.texts):
                    if delta.finished:
                        self._done.append(self._finish(delta.request_id))
            done, self._done = self._done, []
        return done

    def replay(self, arrivals: Sequence[Arrival], before_step: Callable[[int], None] | None = None) -> ReplayResult:
        """Serve `arrivals` on the replay's own clock (see the module docstring). `before_step(k)` runs
        before step k, outside the step's timing (the profiler opens and closes its window there)."""
        pending = sorted(arrivals, key=lambda a: a.at_s)  # stable: equal times keep their order
        meter, responses = self.engine.meter, []
        busy_s, steps, guard_s0, i = 0.0, 0, self.guard_s, 0
        meter.begin("replay")
        t0 = time.perf_counter()
        while i < len(pending) or self.engine.has_work():
            now = time.perf_counter() - t0
            while i < len(pending) and pending[i].at_s <= now:
                self.submit(pending[i].request)
                i += 1
            if self.engine.has_work():
                if before_step is not None:
                    before_step(steps)
                s0 = time.perf_counter()
                responses += self.step()
                busy_s += time.perf_counter() - s0
                steps += 1
            elif i < len(pending):
                time.sleep(max(0.0, pending[i].at_s - now))
        responses += self.step()  # refusals submitted after the last engine step
        wall_s = time.perf_counter() - t0
        window = meter.end("replay")
        return ReplayResult(
            tuple(responses), wall_s, busy_s, steps, window.total_energy_j, window.provenance_summary,
            self.guard_s - guard_s0,
        )  # fmt: skip

    def _check_input(self, request: Request) -> Decision | None:
        text = request.user_text if request.user_text is not None else request.prompt
        if self.guard is None or not isinstance(text, str):
            return None
        t0 = time.perf_counter()
        decision = self.guard.check_input(text)
        self.guard_s += time.perf_counter() - t0
        return decision

    def _finish(self, rid: str) -> Response:
        text, out = self.texts.pop(rid), None
        if self.guard is not None:
            t0 = time.perf_counter()
            out = self.guard.check_output(text)
            self.guard_s += time.perf_counter() - t0
            text = out.text
        ids = tuple(self.engine.output_ids(rid))
        return Response(rid, text, ids, self.engine.record(rid), self._input.pop(rid, None), out)


def _guarded_prompt(request: Request, decision: Decision | None) -> str | list[int]:
    """The prompt the engine gets: with the user's words as the input guard passed them on (redacted)."""
    prompt = request.prompt
    if isinstance(prompt, tuple):
        return list(prompt)
    if decision is None or decision.text == (request.user_text or prompt):
        return prompt
    if request.user_text is None:
        return decision.text
    return prompt.replace(request.user_text, decision.text)
