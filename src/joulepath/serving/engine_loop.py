"""The engine thread of `joulepath serve`: one thread owns the Frontend (which is not thread-safe) and
steps it while there is work; HTTP handlers talk to it only through a command queue (`submit`, `abort`)
and it answers through each request's asyncio queue, one `call_soon_threadsafe` per step."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from joulepath.engine.context import ContextLengthError
from joulepath.serving.frontend import Chunk, Frontend, Request
from joulepath.serving.metrics import ServerMetrics
from joulepath.serving.openai_protocol import APIError

log = logging.getLogger("joulepath.server")
MAX_FAILED_STEPS = 3  # engine steps failing in a row before the loop gives up (/health then says 503)


@dataclass
class Job:
    """One HTTP request's engine requests (prompts x n choices) and the queue their events arrive on."""

    rids: list[str]
    events: asyncio.Queue[Chunk | APIError | int]  # a Chunk, a refused submit, or the index accepted
    prompt_param: str = "prompt"  # what a refused prompt's error names: "prompt" or "messages"
    finished: int = 0

    @property
    def done(self) -> bool:
        return self.finished == len(self.rids)


@dataclass
class EngineLoop:
    """Owns the Frontend on its own thread; `submit` and `abort` may be called from any thread."""

    frontend: Frontend
    metrics: ServerMetrics
    error: BaseException | None = None
    _commands: queue.SimpleQueue[tuple[str, Any]] = field(default_factory=queue.SimpleQueue)
    _wake: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _routes: dict[str, tuple[Job, int]] = field(default_factory=dict)  # engine request id -> (job, index)
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _queued: int = 0  # requests submitted and not yet taken by the engine thread
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="joulepath-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def load(self) -> int:
        """Requests in the engine or on their way to it: the bounded queue's measure. A request leaves it
        when it finishes or is aborted, whatever its HTTP handler does."""
        return len(self._routes) + self._queued

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.error is None

    def submit(self, requests: list[Request], prompt_param: str = "prompt") -> Job:
        job = Job([r.request_id or "" for r in requests], asyncio.Queue(), prompt_param)
        with self._lock:
            self._queued += len(requests)
        self._commands.put(("submit", (job, requests)))
        self._wake.set()
        return job

    def abort(self, job: Job) -> None:
        self._commands.put(("abort", job))
        self._wake.set()

    def _run(self) -> None:
        failures = 0  # steps failed in a row
        while not self._stop.is_set():
            try:
                self._turn()
                failures = 0
            except Exception as exc:  # one failed step fails the requests in it, not the server
                failures += 1
                log.exception("engine step failed (%d in a row)", failures)
                if failures >= MAX_FAILED_STEPS or not self._fail_in_flight(exc):
                    self._die(exc)
                    return
            except BaseException as exc:
                self._die(exc)
                raise

    def _turn(self) -> None:
        """Commands, then one step if there is work, else wait for a command."""
        if self._drain():
            self._engine_state()  # aborts free blocks and slots without a step
        if self.frontend.has_work():
            self._publish(self.frontend.step_stream())
            self._engine_state()
        else:
            self._wake.wait(0.5)
            self._wake.clear()

    def _fail_in_flight(self, exc: Exception) -> bool:
        """Answer every request in flight with a 500 and drop it from the engine; False if that fails too."""
        self._fail_routed(exc)
        try:
            for rid in list(self._routes):
                self.frontend.abort(rid)
        except Exception:
            log.exception("could not drop the failed requests")
            return False
        self._routes.clear()
        return True

    def _die(self, exc: BaseException) -> None:
        """The loop is dead: /health says so, waiting requests get a 500."""
        log.error("engine loop stopped: %s: %s", type(exc).__name__, exc)
        self.error = exc
        self._fail_routed(exc)

    def _fail_routed(self, exc: BaseException) -> None:
        """A 500 naming the failure to every request in flight."""
        failure = APIError(500, f"the engine failed: {type(exc).__name__}: {exc}", "server_error")
        self._post([(job.events, failure) for job, _ in self._routes.values()])

    def _drain(self) -> int:
        """Carry out the queued commands; returns how many there were."""
        n = 0
        while True:
            try:
                kind, arg = self._commands.get_nowait()
            except queue.Empty:
                return n
            n += 1
            if kind == "submit":
                self._submit(*arg)
            else:
                self._abort(arg)

    def _submit(self, job: Job, requests: list[Request]) -> None:
        events: list[tuple[asyncio.Queue[Any], Any]] = []
        for index, request in enumerate(requests):
            try:
                rid = self.frontend.submit(request)
            except (ContextLengthError, ValueError) as exc:
                code = "context_length_exceeded" if isinstance(exc, ContextLengthError) else None
                events.append((job.events, APIError(400, str(exc), param=job.prompt_param, code=code)))
                continue
            except Exception as exc:  # a bug on one request's path refuses that request only
                log.exception("submit failed")
                events.append((job.events, APIError(500, f"{type(exc).__name__}: {exc}", "server_error")))
                continue
            self._routes[rid] = (job, index)
            events.append((job.events, index))
        with self._lock:
            self._queued -= len(requests)
        self._post(events)

    def _abort(self, job: Job) -> None:
        for rid in job.rids:
            if self._routes.pop(rid, None) is not None:
                self.frontend.abort(rid)
                self.metrics.aborted.labels(self.metrics.model).inc()

    def _publish(self, chunks: list[Chunk]) -> None:
        events: list[tuple[asyncio.Queue[Any], Any]] = []
        for chunk in chunks:
            route = self._routes.get(chunk.request_id)
            if route is None:
                continue  # aborted meanwhile
            r = chunk.response
            if r is not None:
                del self._routes[chunk.request_id]
                out_blocked = r.output_guard is not None and r.output_guard.blocked
                self.metrics.finished(r.record, r.finish_reason, r.blocked, out_blocked, r.cache_hit, r.energy_j)
            events.append((route[0].events, chunk))
        self._post(events)

    def _post(self, events: list[tuple[asyncio.Queue[Any], Any]]) -> None:
        if events and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the event loop closed (shutdown)
                self._loop.call_soon_threadsafe(_deliver, events)

    def _engine_state(self) -> None:
        engines = self.frontend.engines.values()  # every model tier
        running = sum(len(e.scheduler.running) for e in engines)
        waiting = sum(len(e.scheduler.waiting) for e in engines)
        used = sum(e.cache.n_blocks - e.cache.free_blocks for e in engines) / sum(e.cache.n_blocks for e in engines)
        self.metrics.engine_state(running, waiting, used)


def _deliver(events: list[tuple[asyncio.Queue[Any], Any]]) -> None:
    for q, event in events:
        q.put_nowait(event)
