"""Request limits of `joulepath serve`: a body-size limit as ASGI middleware, and a token-bucket rate
limit per API key."""

from __future__ import annotations

import json
import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from joulepath.serving.openai_protocol import APIError


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` (declared or streamed) gets 413 before parsing."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _send_error(send, self._too_large())
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # FastAPI re-raises HTTP exceptions from body parsing (others become 400)
                raise HTTPException(413, self._too_large().message)
            return message

        await self.app(scope, counted, send)

    def _too_large(self) -> APIError:
        return APIError(413, f"request body over this server's limit of {self.max_bytes} bytes", code="too_large")


async def _send_error(send: Send, error: APIError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RateLimiter:
    """A token bucket per key: `rate_per_min` refills, `burst` deep. Used from the event loop only."""

    def __init__(self, rate_per_min: float, burst: int) -> None:
        self.rate_per_s = rate_per_min / 60.0
        self.burst = float(burst or max(1.0, rate_per_min))
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at perf_counter s)

    def take(self, key: str) -> float:
        """0 when the request may go; otherwise the seconds until it could."""
        if self.rate_per_s <= 0:
            return 0.0
        now = time.perf_counter()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate_per_s)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate_per_s
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > 100_000:  # forget idle keys rather than grow without bound
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 3600}
        return 0.0
