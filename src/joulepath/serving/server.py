"""`joulepath serve`: the OpenAI HTTP API (FastAPI + uvicorn) as a thin layer on the one serving path.

    HTTP request -> body limit (413) -> API key (401) -> per-key rate limit (429) -> validation (400)
      -> bounded queue (429 + Retry-After) -> EngineLoop.submit: Requests onto the engine thread
    engine thread: Frontend.submit (input guard, answer cache, engine) ... Frontend.step_stream()
      -> Chunks (output-guarded text, finished Responses) -> the request's asyncio queue
    handler: server-sent events (`data: {chunk}` ... `data: [DONE]`) or one JSON response
    client gone: EngineLoop.abort -> Frontend.abort: its sequence and KV blocks are freed at once

The engine thread is `serving/engine_loop.py`, the body and rate limits `serving/limits.py`.
`/health` answers 503 once that thread has died; `/metrics` is Prometheus text (serving/metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.responses import Response as HTTPResponse
from jinja2 import TemplateError
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from joulepath.serving import openai_protocol as api
from joulepath.serving.engine_loop import EngineLoop, Job
from joulepath.serving.frontend import Chunk, Frontend, Request, Response
from joulepath.serving.limits import BodyLimit, RateLimiter
from joulepath.serving.metrics import ServerMetrics
from joulepath.serving.openai_protocol import APIError, ChatCompletionRequest, CompletionRequest

log = logging.getLogger("joulepath.server")
GIL_SWITCH_S = 0.0005  # the interpreter's thread switch interval while serving (default 0.005)
PRIORITY_HEADER = "x-joulepath-priority"


@dataclass(frozen=True)
class ServerConfig:
    """What a deployment sets. Limits are per server process."""

    model_name: str  # the id `/v1/models` lists and requests must name
    api_keys: tuple[str, ...] = ()  # empty: no key needed (only sensible on loopback)
    max_body_bytes: int = 1 << 20  # a bigger request body is refused (413) before it is parsed
    max_pending: int = 256  # requests in the engine or waiting for it; more get 429 + Retry-After
    rate_per_min: float = 0.0  # requests per minute per API key (or client address); 0 = no limit
    rate_burst: int = 0  # requests a key may send at once; 0 = one minute's worth
    completion_max_tokens: int = 16  # OpenAI's default for /v1/completions; chat defaults to the context

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1024 or self.max_pending < 1 or self.rate_per_min < 0 or self.rate_burst < 0:
            raise ValueError("max_body_bytes >= 1024, max_pending >= 1, rate_per_min >= 0 and rate_burst >= 0")


# ---- the app ----------------------------------------------------------------------------------------


class Server:
    """The HTTP layer's state: config, engine loop, metrics, limits. `app` is the ASGI application."""

    def __init__(self, frontend: Frontend, config: ServerConfig) -> None:
        self.frontend, self.config = frontend, config
        self.metrics = ServerMetrics(config.model_name)
        self.engine_loop = EngineLoop(frontend, self.metrics)
        self.rate = RateLimiter(config.rate_per_min, config.rate_burst)
        self.mean_e2e_s = 1.0  # running mean of finished requests' latency, for Retry-After
        self.created = api.now_s()
        self.app = self._build()

    def _build(self) -> FastAPI:
        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            # The event loop and the engine thread hand off through the GIL; at Python's default 5 ms switch
            # interval each hand-off can wait that long while the other thread runs Python code.
            interval_s = sys.getswitchinterval()
            sys.setswitchinterval(GIL_SWITCH_S)
            self.engine_loop.start(asyncio.get_running_loop())
            yield
            self.engine_loop.stop()
            sys.setswitchinterval(interval_s)

        app = FastAPI(title="joulepath", version="1", lifespan=lifespan)
        app.add_middleware(BodyLimit, max_bytes=self.config.max_body_bytes)
        _error_handlers(app)
        auth = [Depends(self._authorize)]
        app.post("/v1/completions", dependencies=auth)(self.completions)
        app.post("/v1/chat/completions", dependencies=auth)(self.chat_completions)
        app.get("/v1/models", dependencies=auth)(self.models)
        app.get("/health")(self.health)
        app.get("/metrics")(self.prometheus)
        app.openapi = lambda: self._openapi(app)  # type: ignore[method-assign]
        return app

    def _openapi(self, app: FastAPI) -> dict[str, Any]:
        """FastAPI's document, with `model` narrowed to the one model served (what requests must name)."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            for name in ("CompletionRequest", "ChatCompletionRequest"):
                schema["components"]["schemas"][name]["properties"]["model"]["enum"] = [self.config.model_name]
            app.openapi_schema = schema
        return app.openapi_schema

    # -- operations --
    async def health(self) -> HTTPResponse:
        if self.engine_loop.alive:
            return HTTPResponse(status_code=200)
        return JSONResponse(APIError(503, "the engine loop is not running", "server_error").body(), 503)

    async def prometheus(self) -> HTTPResponse:
        return HTTPResponse(self.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def models(self) -> dict[str, Any]:
        return api.models_list([self.config.model_name], self.created)

    async def _authorize(self, raw: HTTPRequest) -> None:
        """API key (401), then the rate limit per key, or per client address without keys (429). Async:
        it runs on the event loop, which is the only place the rate limiter is touched."""
        keys = self.config.api_keys
        if keys:
            given = raw.headers.get("authorization", "")
            token = given[7:] if given[:7].lower() == "bearer " else ""
            if not any(hmac.compare_digest(token.encode(), k.encode()) for k in keys):
                self.metrics.rejected.labels(self.config.model_name, "401").inc()
                raise APIError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                               param=None, code="invalid_api_key")  # fmt: skip
        client = raw.client.host if raw.client else "-"
        wait_s = self.rate.take(raw.headers.get("authorization", client) if keys else client)
        if wait_s > 0:
            self.metrics.rejected.labels(self.config.model_name, "429").inc()
            raise APIError(429, "rate limit reached for this API key; retry later", "rate_limit_error",
                           code="rate_limit_exceeded", headers={"Retry-After": str(math.ceil(wait_s))})  # fmt: skip

    # -- the two generation endpoints --
    async def completions(self, body: CompletionRequest, raw: HTTPRequest) -> HTTPResponse:
        prompts = body.prompts()
        loaded = self.frontend.engine.loaded
        vocab = loaded.config.vocab_size
        if any(not 0 <= t < vocab for p in prompts if not isinstance(p, str) for t in p):
            raise APIError(400, f"token ids must be in [0, {vocab})", param="prompt")
        texts = [p if isinstance(p, str) else loaded.tokenizer.decode(list(p)) for p in prompts]  # ids are guarded too
        return await self._generate(body, raw, prompts, list(texts), chat=False)

    async def chat_completions(self, body: ChatCompletionRequest, raw: HTTPRequest) -> HTTPResponse:
        loaded = self.frontend.engine.loaded
        if loaded.chat_template is None:
            raise APIError(400, f"model {self.config.model_name} has no chat template; use /v1/completions",
                           param="messages")  # fmt: skip
        try:
            prompt = loaded.apply_chat_template(body.rendered_messages())
        except TemplateError as exc:  # a template that refuses these messages (roles, order)
            raise APIError(400, f"the chat template refused these messages: {exc}", param="messages") from None
        return await self._generate(body, raw, [prompt], [body.client_text()], chat=True)

    async def _generate(
        self, body: CompletionRequest | ChatCompletionRequest, raw: HTTPRequest,
        prompts: list[str | tuple[int, ...]], user_texts: list[str | None], chat: bool,
    ) -> HTTPResponse:  # fmt: skip
        self._check(body)
        requests = self._requests(body, raw, prompts, user_texts, chat)
        self._admit(len(requests))
        job = self.engine_loop.submit(requests, "messages" if chat else "prompt")
        try:
            await self._accepted(job)
        except BaseException:
            self._settle(job)
            raise
        meta = api.envelope(chat, body.stream, api.new_id("chatcmpl" if chat else "cmpl"), api.now_s(), body.model)
        if body.stream:
            events = self._sse(job, meta, chat, body.include_usage, body.n)
            # The background task settles a job whose client left before the stream started (its generator
            # never ran, so its own `finally` never will); settling twice is harmless.
            return StreamingResponse(
                events, media_type="text/event-stream", background=BackgroundTask(self._settle, job)
            )
        return await self._whole(job, meta, chat, body.n, raw)

    def _check(self, body: CompletionRequest | ChatCompletionRequest) -> None:
        if body.model != self.config.model_name:
            raise APIError(404, f"model {body.model!r} is not served here; GET /v1/models lists "
                           f"{self.config.model_name!r}", param="model", code="model_not_found")  # fmt: skip
        bad = body.unsupported()
        if bad is not None:
            raise APIError(400, bad[1], param=bad[0], code="unsupported_parameter")

    def _requests(
        self, body: CompletionRequest | ChatCompletionRequest, raw: HTTPRequest,
        prompts: list[str | tuple[int, ...]], user_texts: list[str | None], chat: bool,
    ) -> list[Request]:  # fmt: skip
        priority = body.priority or raw.headers.get(PRIORITY_HEADER, "interactive")
        if priority not in ("interactive", "batch"):
            raise APIError(400, f"priority must be 'interactive' or 'batch', got {priority!r}", param="priority")
        default_max = self.frontend.engine.context_tokens if chat else self.config.completion_max_tokens
        base = api.new_id("r")
        return [
            Request(prompt, body.sampling(default_max, j), priority, f"{base}-{i * body.n + j}", user_text, body.stream)
            for i, (prompt, user_text) in enumerate(zip(prompts, user_texts, strict=True))
            for j in range(body.n)
        ]

    def _admit(self, n: int) -> None:
        """The bounded queue: refuse with 429 rather than let waiting requests pile up."""
        if n > self.config.max_pending:
            raise APIError(400, f"{n} completions (prompts x n) in one request; this server queues at most "
                           f"{self.config.max_pending}", param="n")  # fmt: skip
        load = self.engine_loop.load
        if load + n > self.config.max_pending:
            self.metrics.rejected.labels(self.config.model_name, "429").inc()
            busy_s = load * self.mean_e2e_s / max(1, self.frontend.engine.config.max_batch)
            raise APIError(429, f"server busy: {load} requests queued (limit {self.config.max_pending}); "
                           "retry after the time in Retry-After", "rate_limit_error", code="queue_full",
                           headers={"Retry-After": str(max(1, math.ceil(busy_s)))})  # fmt: skip

    def _settle(self, job: Job) -> None:
        """The job is over (finished, failed or abandoned): what still runs of it is aborted."""
        if not job.done:
            self.engine_loop.abort(job)
            job.finished = len(job.rids)

    async def _accepted(self, job: Job) -> None:
        """Wait until the engine thread took every request of the job; its first refusal is raised."""
        accepted = 0  # acceptances arrive together, ahead of any chunk (one post per submit command)
        while accepted < len(job.rids):
            event = await self._next(job)
            if isinstance(event, APIError):
                raise event
            accepted += isinstance(event, int)

    async def _next(self, job: Job) -> Chunk | APIError | int:
        """The job's next event; a 500 if the engine thread dies while this waits."""
        while True:
            if not self.engine_loop.alive and job.events.empty():
                raise APIError(500, "the engine loop is not running", "server_error")
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(job.events.get(), timeout=1.0)

    async def _choices(self, job: Job) -> AsyncIterator[tuple[int, Chunk]]:
        """(choice index, chunk) until every choice has finished."""
        index = {rid: i for i, rid in enumerate(job.rids)}
        while not job.done:
            event = await self._next(job)
            if isinstance(event, APIError):
                raise event
            if isinstance(event, Chunk):
                if event.response is not None:
                    job.finished += 1
                    self._observe(event.response)
                yield index[event.request_id], event

    def _observe(self, response: Response) -> None:
        if response.record is not None and not response.cache_hit:
            self.mean_e2e_s += 0.05 * (response.record.e2e_s - self.mean_e2e_s)

    async def _whole(self, job: Job, meta: dict[str, Any], chat: bool, n: int, raw: HTTPRequest) -> HTTPResponse:
        finals: dict[int, Chunk] = {}

        async def collect() -> None:
            async for i, chunk in self._choices(job):
                if chunk.response is not None:
                    finals[i] = chunk

        try:
            await _unless_disconnected(collect(), raw)
        finally:
            self._settle(job)
        choices = [api.completion_choice(chat, i, finals[i].response.text, finals[i].response.finish_reason)  # type: ignore[union-attr]
                   for i in sorted(finals)]  # fmt: skip
        return JSONResponse({**meta, "choices": choices, **self._usage(finals, n)})

    async def _sse(self, job: Job, meta: dict[str, Any], chat: bool, include_usage: bool, n: int) -> AsyncIterator[str]:
        finals: dict[int, Chunk] = {}
        extra = {"usage": None} if include_usage else {}
        try:
            if chat:  # the role first, as OpenAI and vLLM send it
                for i in range(len(job.rids)):
                    yield _event({**meta, "choices": [api.chunk_choice(True, i, "", None, first=True)], **extra})
            async for i, chunk in self._choices(job):
                if chunk.text:
                    yield _event({**meta, "choices": [api.chunk_choice(chat, i, chunk.text, None, False)], **extra})
                if chunk.response is not None:
                    finals[i] = chunk
                    end = api.chunk_choice(chat, i, "", chunk.response.finish_reason, False)
                    yield _event({**meta, "choices": [end], **extra})
            if include_usage:
                yield _event({**meta, "choices": [], **self._usage(finals, n)})
            yield "data: [DONE]\n\n"
        except APIError as exc:  # the stream has started: the error goes in the stream, as vLLM does it
            yield _event(exc.body())
        finally:
            self._settle(job)  # also when the client went away: the engine drops its requests now

    def _usage(self, finals: dict[int, Chunk], n: int) -> dict[str, Any]:
        """OpenAI's usage (each prompt counted once, every choice's output) and joulepath's energy."""
        responses = {i: c.response for i, c in finals.items() if c.response is not None}
        records = {i: r.record for i, r in responses.items() if r.record is not None}
        prompt = sum(r.prompt_tokens for i, r in records.items() if i % n == 0)
        completion = sum(r.output_tokens for r in records.values())
        provenance = sorted({r.energy_provenance for r in records.values()}) or ["none"]
        energy_j = sum(r.energy_j for r in responses.values())  # a cascade's discarded answer included
        joules = {"energy_j": energy_j, "energy_provenance": ",".join(provenance)}
        return {"usage": api.usage(prompt, completion), "joulepath": joules}


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _unless_disconnected(work: Awaitable[None], raw: HTTPRequest) -> None:
    """Run `work`; if the client disconnects first, cancel it (the caller's `finally` aborts the job)."""
    task, gone = asyncio.ensure_future(work), asyncio.ensure_future(_disconnect(raw))
    try:
        done, _ = await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            task.cancel()
            raise APIError(499, "client closed the request", code="client_closed_request")
        task.result()
    finally:
        gone.cancel()
        task.cancel()


async def _disconnect(raw: HTTPRequest) -> None:
    while (await raw.receive())["type"] != "http.disconnect":
        pass


def _error_handlers(app: FastAPI) -> None:
    """Every error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    async def api_error(_: HTTPRequest, exc: Exception) -> HTTPResponse:
        assert isinstance(exc, APIError)
        return JSONResponse(exc.body(), exc.status, headers=exc.headers)

    async def invalid(_: HTTPRequest, exc: Exception) -> HTTPResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        return JSONResponse(APIError(400, message, param=param).body(), 400)

    async def http_error(_: HTTPRequest, exc: Exception) -> HTTPResponse:
        assert isinstance(exc, StarletteHTTPException)
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        code = "too_large" if exc.status_code == 413 else None
        return JSONResponse(APIError(exc.status_code, str(exc.detail), kind, code=code).body(), exc.status_code,
                            exc.headers)  # fmt: skip

    async def unexpected(_: HTTPRequest, exc: Exception) -> HTTPResponse:
        log.exception("unhandled error")
        return JSONResponse(APIError(500, f"internal error: {type(exc).__name__}", "server_error").body(), 500)

    handlers: dict[type[Exception], Callable[[HTTPRequest, Exception], Awaitable[HTTPResponse]]] = {
        APIError: api_error, RequestValidationError: invalid, StarletteHTTPException: http_error, Exception: unexpected,
    }  # fmt: skip
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)
