"""The one path a request takes, from whoever sends it (the main job, a benchmark, the profiler, the HTTP
server) to its text, tokens and joules:

    submit(Request)
      -> input guard              serving/guard.py: blocked -> a Response with the refusal, no engine
      -> answer cache             serving/answer_cache.py (off by default): a hit answers here, before
                                  any engine work, with zero engine energy; a miss is stored when it finishes
      -> tiers (optional)         serving/router.py: a router picks the model tier, or the cascade starts on
                                  the small tier and escalates unsure answers when they finish
      -> engine.add_request       engine/engine.py: paged KV, continuous batching
    step() / step_stream()
      -> engine.step()            token ids and finish flags (speculative proposals plug in at the
                                  scheduler: ScheduledChunk.draft_tokens)
      -> incremental detokenizer  engine/detokenize.py: new ids only, stop strings on the new text only
      -> output guard             on each finished text; on a streamed request also on its text so far,
                                  releasing only what the guard has passed (see `StreamGuard`)
      -> Response                 text, output ids, the engine's RequestRecord (TTFT, TPOT, joules with
                                  their provenance); step_stream() also gives each step's new text
    abort(id)                     a client gone: its sequence and KV blocks are freed at once

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

import dataclasses
import itertools
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from joulepath.engine import Engine, RequestRecord, SamplingParams
from joulepath.engine.detokenize import TextDelta, TextStage
from joulepath.engine.scopes import STEP, scope
from joulepath.serving.answer_cache import AnswerCache, AnswerQuery, CachedAnswer
from joulepath.serving.guard import REFUSAL, Decision, Guard
from joulepath.serving.router import Cascade, Router
from joulepath.serving.rules import redact

# A streamed request's unfinished tail is held back until the output guard has seen what follows it: the
# word being written (an e-mail address in progress) and a run of digits with their separators (a card or
# phone number split across steps), at most STREAM_HOLD_CHARS. A longer match reaching into text already
# sent ends the stream instead (finish_reason "content_filter").
STREAM_HOLD_CHARS = 64
_OPEN_TAIL = re.compile(r"(?:[+(]?\d[\d ().-]*)?\S*\Z")


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
    stream: bool = False  # step_stream() gives its text as it is made (output-guarded), not only at the end


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
    # Answered by the answer cache: no engine work; the record's energy is 0 J and its times the lookup's.
    cache_hit: bool = False
    tier: str = ""  # the model tier that answered (Tiers; "default" with one engine)
    route: str = ""  # why that tier
    escalated_from: RequestRecord | None = None  # cascade: the small tier's answer that was not kept

    @property
    def energy_j(self) -> float:
        """Engine joules this request cost, the cascade's discarded small-tier answer included."""
        spent = self.escalated_from.energy_j if self.escalated_from is not None else 0.0
        return (self.record.energy_j if self.record is not None else 0.0) + spent

    @property
    def blocked(self) -> bool:
        return self.record is None

    @property
    def finish_reason(self) -> str:
        """OpenAI's vocabulary: "stop", "length", or "content_filter" when a guard refused or cut it."""
        refused = self.blocked or (self.output_guard is not None and self.output_guard.blocked)
        if refused or self.record is None:
            return "content_filter"
        return self.record.finish_reason


@dataclass(frozen=True)
class Chunk:
    """What one step made for one request: new text (output-guarded; streamed requests only) and, on its
    last chunk, the finished Response."""

    request_id: str
    text: str
    response: Response | None = None


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


@dataclass(frozen=True)
class Tiers:
    """More model tiers behind a Frontend and how requests are spread over them (serving/router.py). The
    Frontend's own engine is the cheapest tier; `larger` follow, cheapest first."""

    small: str  # the name of the Frontend's own engine's tier
    larger: tuple[tuple[str, Engine], ...]
    router: Router | None = None  # None: every request starts on the small tier
    cascade: Cascade | None = None  # a non-streamed small-tier answer below its confidence bar goes to the last tier

    def __post_init__(self) -> None:
        if not self.larger:
            raise ValueError("Tiers needs at least one larger tier")
        if self.router is not None and self.router.tiers != (self.small, *(n for n, _ in self.larger)):
            raise ValueError(
                f"the router's tiers {self.router.tiers} are not {self.small} + {[n for n, _ in self.larger]}"
            )


class Frontend:
    """Guards, engine(s) and text for a stream of requests. Not thread-safe: one caller drives it."""

    def __init__(
        self, engine: Engine, guard: Guard | None = None, answer_cache: AnswerCache | None = None,
        tiers: Tiers | None = None,
    ) -> None:  # fmt: skip
        """answer_cache: None (the default) serves every request on the engine; `ExactAnswerCache()` is
        the safe choice (greedy requests, identical prompts); a semantic one comes only from
        `near_duplicates.audited_semantic_cache`, which refuses to build above a 0.1 % false-hit rate.
        tiers: larger models beside `engine` and the router / cascade that picks among them."""
        self.engine, self.guard, self.answer_cache, self.tiers = engine, guard, answer_cache, tiers
        if tiers is not None and tiers.cascade is not None and not engine.config.track_logprobs:
            raise ValueError("the cascade reads the small tier's log-probabilities: build its engine with "
                             "EngineConfig(track_logprobs=True)")  # fmt: skip
        small = tiers.small if tiers is not None else "default"
        self.engines: dict[str, Engine] = {small: engine, **dict(tiers.larger if tiers is not None else ())}
        self._stages: dict[str, TextStage] = {name: e.text_stage() for name, e in self.engines.items()}
        self.texts = self._stages[small]
        self._tier: dict[str, str] = {}  # request id -> the tier serving it
        self.routes: dict[str, str] = {}  # request id -> why its tier was chosen (kept until it is answered)
        self._escalated: dict[str, RequestRecord] = {}  # cascade: the small tier's spent record
        self.guard_s = 0.0
        self._ids = itertools.count()
        self._input: dict[str, Decision | None] = {}
        self._done: list[Response] = []  # refusals and cache hits, answered at the next step
        self._queries: dict[str, AnswerQuery] = {}  # cache misses in flight, stored when they finish
        self._streams: dict[str, StreamGuard] = {}  # streamed requests in flight
        self._cut: dict[str, Decision] = {}  # streamed requests the output guard ended early

    def submit(self, request: Request) -> str:
        """Queue a request; returns its id. A refused request is answered by the next `step()`. Raises
        what the engine raises for a request it cannot serve (ValueError, ContextLengthError)."""
        rid = request.request_id or f"fe-{next(self._ids)}"
        decision = self._check_input(request)
        if decision is not None and decision.blocked:
            self._done.append(Response(rid, decision.text, (), None, decision))
            return rid
        prompt, query = _guarded_prompt(request, decision), None
        if self.answer_cache is not None:
            query = _answer_query(self.engine.loaded.source, request, decision, prompt)
            hit = self._cached(rid, query, decision)
            if hit is not None:
                self._done.append(hit)
                return rid
        tier = self._route(rid, request)
        try:
            self.engines[tier].add_request(prompt, request.params, request.priority, rid)
        except ValueError:
            self.routes.pop(rid, None)
            raise
        self._tier[rid] = tier
        if query is not None:  # a miss: stored when it finishes
            self._queries[rid] = query
        self._stages[tier].open(rid, request.params)
        self._input[rid] = decision
        if request.stream:
            self._streams[rid] = StreamGuard(self.guard)
        return rid

    def abort(self, request_id: str) -> None:
        """A client gone: its sequence leaves the engine and its KV blocks are freed now; nothing is
        answered for it. An unknown or finished request is ignored."""
        tier = self._tier.pop(request_id, None)
        if tier is not None:
            self.engines[tier].abort_request(request_id)
            self._stages[tier].drop(request_id)
        self._input.pop(request_id, None)
        self.routes.pop(request_id, None)
        self._escalated.pop(request_id, None)
        self._queries.pop(request_id, None)
        self._streams.pop(request_id, None)
        self._cut.pop(request_id, None)
        self._done = [r for r in self._done if r.request_id != request_id]

    def has_work(self) -> bool:
        return self._engines_busy() or bool(self._done)

    def _engines_busy(self) -> bool:
        return any(e.has_work() for e in self.engines.values())

    def _route(self, rid: str, request: Request) -> str:
        """The tier a new request starts on: the router's choice, else the small tier (the cascade's start)."""
        if self.tiers is None:
            return next(iter(self.engines))
        if self.tiers.router is None:
            self.routes[rid] = "cascade: the small tier answers first" if self.tiers.cascade else "small tier"
            return self.tiers.small
        # the request as the client sent it (the router was fitted on unguarded prompts), not as redacted
        raw = request.prompt
        n_tokens = len(raw) if isinstance(raw, tuple) else len(self.engine.loaded.tokenizer.encode(raw))
        text = request.user_text or (raw if isinstance(raw, str) else "")
        route = self.tiers.router.route_requests([text], [n_tokens])[0]
        self.routes[rid] = route.reason
        return route.tier

    def step(self) -> list[Response]:
        """One engine step, its tokens as text, and the requests it finished (plus any refusals)."""
        return [c.response for c in self.step_stream() if c.response is not None]

    def step_stream(self) -> list[Chunk]:
        """One engine step: the new text of each streamed request (what the output guard has passed) and
        a last chunk, with its Response, for each request finished (refusals and cache hits included)."""
        chunks: list[Chunk] = []
        with scope(STEP):
            for tier, engine in self.engines.items():
                if engine.has_work():
                    for delta in engine.step_text(self._stages[tier]):
                        chunks += self._chunks(delta)
            done, self._done = self._done, []
        return chunks + [Chunk(r.request_id, r.text, r) for r in done]

    def _chunks(self, delta: TextDelta) -> list[Chunk]:
        """A step's text for one request: streamed text through its StreamGuard, and the end if finished."""
        rid, text = delta.request_id, ""
        if rid not in self._input:  # finished earlier in this step (the output guard cut it)
            return []
        stream = self._streams.get(rid)
        tier = self._tier[rid]
        if stream is not None and rid not in self._cut:
            text, cut = stream.release(delta.text, delta.finished)
            if cut is not None:  # the guard refused the text so far: end the request now
                self._cut[rid] = cut
                if not delta.finished:
                    self.engines[tier].finish_request(rid, "stop")
                    self._stages[tier].close(rid)
                return [Chunk(rid, "", self._finish(rid))]
        if delta.finished and self._escalate(rid, stream is not None):
            return []
        if delta.finished:
            return [Chunk(rid, text, self._finish(rid))]
        return [Chunk(rid, text)] if text else []

    def _escalate(self, rid: str, streamed: bool) -> bool:
        """Cascade: a finished small-tier answer below the confidence bar is served again on the last tier
        (its small-tier record is kept: those joules were spent). Streamed requests are never escalated:
        their text has been shown."""
        tiers = self.tiers
        if tiers is None or tiers.cascade is None or streamed or self._tier[rid] != tiers.small:
            return False
        small = self.engines[tiers.small]
        record = small.record(rid)
        if not tiers.cascade.escalate(record.logprob_sum, record.output_tokens):
            return False
        large, engine = tiers.larger[-1]
        params, priority, prompt, arrival_s = small.request_params(rid)
        try:  # its latency counts from the first arrival: the time on the small tier is the client's too
            engine.add_request(prompt, params, priority, rid, arrival_s=arrival_s)
        except ValueError:  # the last tier cannot take it (its context or KV is smaller): keep the answer
            return False
        self._stages[tiers.small].pop(rid)
        small.forget(rid)
        self._stages[large].open(rid, params)
        self._tier[rid] = large
        self._escalated[rid] = record
        mean = record.logprob_sum / max(record.output_tokens, 1)
        self.routes[rid] = (
            f"cascade: {tiers.small}'s mean log-probability {mean:.2f} below {tiers.cascade.min_mean_logprob:.2f}"
        )
        return True

    def replay(self, arrivals: Sequence[Arrival], before_step: Callable[[int], None] | None = None) -> ReplayResult:
        """Serve `arrivals` on the replay's own clock (see the module docstring). `before_step(k)` runs
        before step k, outside the step's timing (the profiler opens and closes its window there)."""
        pending = sorted(arrivals, key=lambda a: a.at_s)  # stable: equal times keep their order
        meter, responses = self.engine.meter, []
        busy_s, steps, guard_s0, i = 0.0, 0, self.guard_s, 0
        meter.begin("replay")
        t0 = time.perf_counter()
        while i < len(pending) or self._engines_busy():
            now = time.perf_counter() - t0
            while i < len(pending) and pending[i].at_s <= now:
                self.submit(pending[i].request)
                i += 1
            if self._engines_busy():
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
        tier = self._tier.pop(rid)
        engine = self.engines[tier]
        text, out = self._stages[tier].pop(rid), self._cut.pop(rid, None)
        stream = self._streams.pop(rid, None)
        if out is None and self.guard is not None:
            t0 = time.perf_counter()
            out = stream.last if stream is not None and stream.text == text else self.guard.check_output(text)
            self.guard_s += time.perf_counter() - t0
        if out is not None:
            text = out.text
        ids, record = tuple(engine.output_ids(rid)), engine.record(rid)
        engine.forget(rid)  # the Response carries all of it now
        query = self._queries.pop(rid, None)
        if self.answer_cache is not None and query is not None and (out is None or not out.blocked):
            self.answer_cache.store(query, CachedAnswer(text, ids, record.prompt_tokens, record.finish_reason))
        spent = self._escalated.pop(rid, None)
        return Response(rid, text, ids, record, self._input.pop(rid, None), out, tier=tier,
                        route=self.routes.pop(rid, ""), escalated_from=spent)  # fmt: skip

    def _cached(self, rid: str, query: AnswerQuery, decision: Decision | None) -> Response | None:
        """The cached answer as a Response (zero engine energy, the lookup's time), or None on a miss."""
        assert self.answer_cache is not None
        t0 = time.perf_counter()
        answer = self.answer_cache.lookup(query)
        lookup_s = time.perf_counter() - t0
        if answer is None:
            return None
        record = RequestRecord(
            rid, answer.prompt_tokens, len(answer.output_ids), ttft_s=lookup_s, tpot_s=0.0, e2e_s=lookup_s,
            energy_j=0.0, energy_provenance="none:answer-cache-hit", finish_reason=answer.finish_reason, preemptions=0,
        )  # fmt: skip
        return Response(rid, answer.text, answer.output_ids, record, decision, cache_hit=True)


def _answer_query(model_id: str, request: Request, decision: Decision | None, prompt: str | list[int]) -> AnswerQuery:
    """What the answer cache keys on: the prompt the engine would get and the user's words in it (guarded)."""
    user_text = request.user_text
    if user_text is not None and decision is not None:
        user_text = decision.text
    return AnswerQuery(model_id, prompt if isinstance(prompt, str) else tuple(prompt), user_text, request.params)


def _guarded_prompt(request: Request, decision: Decision | None) -> str | list[int]:
    """The prompt the engine gets: with the user's words as the input guard passed them on (redacted)."""
    prompt = request.prompt
    if isinstance(prompt, tuple):
        return list(prompt)
    if decision is None or decision.text == (request.user_text or prompt):
        return prompt
    if request.user_text is None:
        return decision.text
    if request.user_text in prompt:
        return prompt.replace(request.user_text, decision.text)
    # The user's words are spread over the prompt (several chat turns): redact each finding where it is.
    for f in decision.findings:
        prompt = prompt.replace(f.text, redact(f.text, [dataclasses.replace(f, start=0, end=len(f.text))]))
    return prompt


class StreamGuard:
    """The output guard on a streamed request: each step the guard checks the whole text so far and only
    what it passed is released, less its open tail (which a redaction may still change) until the request
    ends. Text once released is never taken back: if the guard blocks, or a redaction
    reaches into released text, the stream ends there (OpenAI's finish_reason "content_filter")."""

    def __init__(self, guard: Guard | None) -> None:
        self.guard = guard
        self.text = ""  # what the detokenizer has released (it holds back a possible stop string's start)
        self.sent = ""  # guarded text released so far
        self.last: Decision | None = None  # the guard's decision on `text`, as it was checked last

    def release(self, new_text: str, finished: bool) -> tuple[str, Decision | None]:
        """Take the detokenizer's new text; (text to show now, None) or ("", the decision that ends the
        stream)."""
        self.text += new_text
        text = guarded = self.text
        if self.guard is not None:
            self.last = self.guard.check_output(text)
            if self.last.blocked:
                return "", self.last
            guarded = self.last.text
        if not guarded.startswith(self.sent):  # a redaction reached text already shown
            return "", Decision("block", REFUSAL, ("output.stream_redaction",))
        end = len(guarded) if finished or self.guard is None else max(len(self.sent), len(guarded) - _held(guarded))
        new, self.sent = guarded[len(self.sent) : end], guarded[:end]
        return new, None


def _held(text: str) -> int:
    """Characters at the end of `text` a redaction could still change: its open tail (see _OPEN_TAIL)."""
    match = _OPEN_TAIL.search(text)
    return min(STREAM_HOLD_CHARS, len(text) - match.start()) if match else 0
