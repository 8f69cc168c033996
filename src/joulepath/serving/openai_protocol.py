"""The OpenAI HTTP API's shapes: requests (validated, with a clear error for everything this engine does
not do), responses, streamed chunks and errors, as `/v1/completions` and `/v1/chat/completions` use them
(the same shapes vLLM and SGLang serve). No HTTP here: `serving/server.py` moves these over the wire.

Parameters follow OpenAI's defaults (temperature 1, top_p 1, n 1; `max_tokens` 16 for completions and
the rest of the context for chat). Extensions: `priority` ("interactive" | "batch"), which feeds the
scheduler's priority classes (a header, `X-Joulepath-Priority`, does the same), and vLLM's `ignore_eos`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from joulepath.engine import SamplingParams

Priority = Literal["interactive", "batch"]
MAX_STOP = 4  # OpenAI: up to 4 stop sequences
MAX_N = 16


class APIError(Exception):
    """An error the client gets in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
        code: str | None = None, headers: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class _Sampling(BaseModel):
    """What both endpoints share. Unknown fields are refused (as OpenAI does), naming the field."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    user: str | None = Field(None, max_length=256)
    priority: Priority | None = None  # joulepath's extension
    ignore_eos: bool = False  # vLLM's extension (load tests): generate max_tokens whatever the model says
    # OpenAI parameters this engine does not implement: accepted only at the value that means "off".
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    logprobs: Any = None
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences, got {len(value)}")
        return value

    def unsupported(self) -> tuple[str, str] | None:
        """(param, why) for a parameter set to something this engine cannot do; None when all is servable."""
        off: dict[str, Any] = {
            "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0), "logit_bias": (None, {}),
            "logprobs": (None, False), "top_logprobs": (None, 0),
        }  # fmt: skip
        off.update(self._unsupported_fields())
        for name, allowed in off.items():
            if getattr(self, name) not in allowed:
                return name, f"'{name}' is not supported by this server; leave it out"
        if self.stream_options is not None and not self.stream:
            return "stream_options", "'stream_options' is only allowed with stream=true"
        return None

    def _unsupported_fields(self) -> dict[str, tuple[Any, ...]]:
        return {}

    def sampling(self, default_max_tokens: int, index: int) -> SamplingParams:
        """The engine's parameters for choice `index` (a seeded request gets seed + index per choice)."""
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        seed = None if self.seed is None else (self.seed + index) % 2**63
        max_tokens = self.max_tokens if self.max_tokens is not None else default_max_tokens
        stops = tuple(s for s in stop if s)
        return SamplingParams(max_tokens, self.temperature, 0, self.top_p, seed, stops, ignore_eos=self.ignore_eos)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(_Sampling):
    """POST /v1/completions. `prompt`: a string, a list of strings, token ids, or a list of token-id lists."""

    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1, le=MAX_N)

    def _unsupported_fields(self) -> dict[str, tuple[Any, ...]]:
        return {"echo": (False,), "suffix": (None, ""), "best_of": (None, self.n)}

    def prompts(self) -> list[str | tuple[int, ...]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise APIError(400, "prompt is empty: give a string or token ids", param="prompt")
        ids = [x for x in p if isinstance(x, int)]
        if ids:  # one prompt as token ids (pydantic admits only homogeneous lists)
            return [tuple(ids)]
        return [x if isinstance(x, str) else tuple(x) for x in p if not isinstance(x, int)]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = Field(None, max_length=64)

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatCompletionRequest(_Sampling):
    """POST /v1/chat/completions: messages rendered with the model's chat template."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name for max_tokens
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None

    def _unsupported_fields(self) -> dict[str, tuple[Any, ...]]:
        return {"tools": (None, []), "tool_choice": (None, "none"), "response_format": (None, {"type": "text"})}

    def sampling(self, default_max_tokens: int, index: int) -> SamplingParams:
        if self.max_completion_tokens is not None and self.max_tokens is None:
            renamed = self.model_copy(update={"max_tokens": self.max_completion_tokens})
            return renamed.sampling(default_max_tokens, index)
        return super().sampling(default_max_tokens, index)

    def rendered_messages(self) -> list[dict[str, str]]:
        """Messages as the template reads them ("developer" is OpenAI's newer name for "system")."""
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]

    def client_text(self) -> str:
        """Every message's text, which the input guard checks: over HTTP the client writes the system and
        assistant turns too, so none of them is trusted."""
        return "\n".join(m.text() for m in self.messages)


# ---- responses --------------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now_s() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_choice(chat: bool, index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    """One choice of a whole (non-streamed) response."""
    if chat:
        message = {"role": "assistant", "content": text}
        return {"index": index, "message": message, "logprobs": None, "finish_reason": finish_reason}
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}


def chunk_choice(chat: bool, index: int, text: str, finish_reason: str | None, first: bool) -> dict[str, Any]:
    """One choice of a streamed chunk: chat chunks carry a `delta` (the role on its first chunk)."""
    if chat:
        delta: dict[str, str] = {"role": "assistant", "content": text} if first else ({"content": text} if text else {})
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}


def envelope(chat: bool, stream: bool, rid: str, created: int, model: str) -> dict[str, Any]:
    """The fields every response or chunk of one request shares."""
    kind = ("chat.completion.chunk" if stream else "chat.completion") if chat else "text_completion"
    return {"id": rid, "object": kind, "created": created, "model": model}


def models_list(model_ids: list[str], created: int) -> dict[str, Any]:
    data = [{"id": m, "object": "model", "created": created, "owned_by": "joulepath"} for m in model_ids]
    return {"object": "list", "data": data}
