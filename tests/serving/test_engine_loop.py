"""The server's engine thread and limits, in process (the HTTP path is tests/serving/test_server.py)."""

from __future__ import annotations

import asyncio

import pytest

from joulepath.engine import Engine, SamplingParams
from joulepath.model import LoadedModel, load_model
from joulepath.serving.frontend import Frontend, Request
from joulepath.serving.limits import RateLimiter
from joulepath.serving.openai_protocol import APIError, ChatCompletionRequest, CompletionRequest
from joulepath.serving.server import Server, ServerConfig


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return load_model("dummy:tiny-llama")


def test_a_failed_step_fails_its_requests_and_the_server_goes_on(tiny: LoadedModel) -> None:
    frontend = Frontend(Engine(tiny))
    real_step = frontend.step_stream
    failures = iter([RuntimeError("device hiccup")])

    def flaky() -> list:
        for exc in failures:
            raise exc
        return real_step()

    frontend.step_stream = flaky  # type: ignore[method-assign]
    server = Server(frontend, ServerConfig("tiny"))

    async def two_requests() -> tuple[list[object], list[object], int]:
        server.engine_loop.start(asyncio.get_running_loop())
        first = server.engine_loop.submit([Request("hi", SamplingParams(max_tokens=3), request_id="a")])
        failed = [await asyncio.wait_for(first.events.get(), 10) for _ in range(2)]
        second = server.engine_loop.submit([Request("hi", SamplingParams(max_tokens=3), request_id="b")])
        served = [await asyncio.wait_for(second.events.get(), 10) for _ in range(2)]
        health = (await server.health()).status_code
        server.engine_loop.stop()
        return failed, served, health

    failed, served, health = asyncio.run(two_requests())
    assert failed[0] == 0 and isinstance(failed[1], APIError) and failed[1].status == 500
    assert "device hiccup" in failed[1].message
    assert served[0] == 0 and getattr(served[1], "response", None) is not None  # the next request is answered
    assert health == 200 and frontend.engine.cache.free_blocks == frontend.engine.cache.n_blocks


def test_an_engine_that_keeps_failing_stops_the_loop_and_health_says_503(tiny: LoadedModel) -> None:
    frontend = Frontend(Engine(tiny))

    def device_lost() -> list:
        raise RuntimeError("device lost")

    frontend.step_stream = device_lost  # type: ignore[method-assign]
    real_submit, submitted = frontend.submit, []

    def submit(request: Request) -> str:
        submitted.append(request)
        return real_submit(request)

    frontend.submit = submit  # type: ignore[method-assign]
    frontend.has_work = lambda: bool(submitted)  # type: ignore[method-assign]  # work forever once one came
    server = Server(frontend, ServerConfig("tiny"))

    async def serve_one() -> tuple[list[object], int]:
        server.engine_loop.start(asyncio.get_running_loop())
        job = server.engine_loop.submit([Request("hi", SamplingParams(max_tokens=3), request_id="a")])
        events = [await asyncio.wait_for(job.events.get(), 10) for _ in range(2)]
        for _ in range(100):
            if not server.engine_loop.alive:
                break
            await asyncio.sleep(0.05)
        health = await server.health()
        server.engine_loop.stop()
        return events, health.status_code

    events, status = asyncio.run(serve_one())
    assert events[0] == 0  # accepted, then the step failed
    assert isinstance(events[1], APIError) and events[1].status == 500 and "device lost" in events[1].message
    assert status == 503 and not server.engine_loop.alive


def test_the_rate_limiter_refills_per_key() -> None:
    limiter = RateLimiter(rate_per_min=60, burst=2)
    assert [limiter.take("a") for _ in range(2)] == [0.0, 0.0]
    wait_s = limiter.take("a")
    assert 0 < wait_s <= 1.0  # one request per second refills
    assert limiter.take("b") == 0.0  # another key has its own bucket
    assert RateLimiter(0, 0).take("a") == 0.0  # 0 = no limit


def test_requests_map_to_engine_parameters() -> None:
    chat = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}],
         "max_completion_tokens": 5, "stop": "\n", "seed": 3, "n": 2, "temperature": 0.5}
    )  # fmt: skip
    params = chat.sampling(default_max_tokens=100, index=1)
    assert (params.max_tokens, params.stop, params.seed, params.temperature) == (5, ("\n",), 4, 0.5)
    assert chat.rendered_messages()[0]["role"] == "system" and chat.client_text() == "be brief\nhi"
    assert CompletionRequest.model_validate({"model": "m", "prompt": [1, 2, 3]}).prompts() == [(1, 2, 3)]
    assert CompletionRequest.model_validate({"model": "m", "prompt": ["a", "b"]}).prompts() == ["a", "b"]
    assert CompletionRequest.model_validate({"model": "m", "prompt": "a", "echo": True}).unsupported() == (
        "echo", "'echo' is not supported by this server; leave it out",
    )  # fmt: skip
    with pytest.raises(ValueError, match="at most 4 stop"):
        CompletionRequest.model_validate({"model": "m", "prompt": "a", "stop": ["1", "2", "3", "4", "5"]})
