"""Batch-1 generation on a contiguous, fixed-size cache: the latency path (gpt-fast style).

Prefill runs once over the prompt; then `decode_one_token` runs with identical shapes every step, so
`torch.compile(mode="reduce-overhead")` can capture it as a CUDA graph. On CPU it runs eagerly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from joulepath.engine.context import check_output_fits, check_prompt_fits, context_tokens
from joulepath.engine.runner import StaticCacheAttention, decode_one_token
from joulepath.engine.sampling import SamplingParams, sample_token
from joulepath.meter import Meter
from joulepath.model.transformer import Transformer

DecodeFn = Callable[[Transformer, StaticCacheAttention, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class StaticResult:
    output_ids: list[int]
    prefill_s: float
    decode_s: float  # all decode steps, device-synchronised

    @property
    def decode_tokens_per_s(self) -> float:
        steps = len(self.output_ids) - 1  # the first token comes from prefill
        return steps / self.decode_s if self.decode_s > 0 else float("nan")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # named sync: timings must include the queued kernels


@torch.inference_mode()
def generate_static(
    model: Transformer, prompt_ids: list[int], params: SamplingParams, compile_decode: bool = False
) -> StaticResult:
    """Greedy or sampled batch-1 generation; stops at max_tokens (EOS is ignored: a latency path).
    Raises ContextLengthError where prompt + max_tokens would run past the model's context (the length
    is fixed here, so it is refused rather than capped)."""
    context = context_tokens(model.cfg)
    check_prompt_fits(len(prompt_ids), context, f"this {model.cfg.model_type} model")
    check_output_fits(len(prompt_ids), params.max_tokens, context, f"this {model.cfg.model_type} model", "max_tokens")
    device = next(model.parameters()).device
    max_len = len(prompt_ids) + params.max_tokens
    attend = StaticCacheAttention(model, max_len)
    decode: DecodeFn = decode_one_token
    if compile_decode:
        decode = torch.compile(decode_one_token, mode="reduce-overhead", fullgraph=True)
    gen = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
    t0 = time.perf_counter()
    positions = torch.arange(len(prompt_ids), device=device)
    attend.set_positions(positions)
    logits = model(torch.tensor(prompt_ids, device=device), positions, attend, logit_rows=positions[-1:])
    out = [sample_token(logits[0], params, gen)]
    _sync(device)
    t1 = time.perf_counter()
    for i in range(params.max_tokens - 1):
        pos = torch.tensor([len(prompt_ids) + i], device=device)
        logits = decode(model, attend, torch.tensor([out[-1]], device=device), pos)
        out.append(sample_token(logits[0], params, gen))
    _sync(device)
    return StaticResult(out, t1 - t0, time.perf_counter() - t1)


@dataclass(frozen=True)
class BatchResult:
    """Greedy decoding of `batch` equal-length prompts on the static cache."""

    output_ids: list[list[int]]  # per sequence: the prefill's token, then one per decode step
    decode_s: float  # all decode steps, device-synchronised
    steps: int
    captured: bool  # the decode step ran as one replayed CUDA graph
    energy_j: float = float("nan")  # the meter's window over the decode steps (NaN without a meter)
    energy_provenance: str = "not metered"

    @property
    def decode_tokens_per_s(self) -> float:
        return len(self.output_ids) * self.steps / self.decode_s if self.decode_s > 0 else float("nan")


def greedy_step(model: Transformer, attend: StaticCacheAttention, token: Tensor, position: Tensor) -> Tensor:
    """Every sequence's next greedy token: token (B,), position (1,) shared by all."""
    attend.set_positions(position)
    return model(token, position.expand(attend.batch), attend).argmax(-1)


class _GraphStep:
    """One greedy decode step of every sequence, captured once as a CUDA graph (no torch.compile: the
    kernels run as eager would, without the launch gaps) and replayed with the token and position
    written into fixed input buffers. The capture's warm-up runs write position `max_len - 1`, which
    decoding overwrites before any query may see it."""

    def __init__(self, model: Transformer, attend: StaticCacheAttention) -> None:
        device = attend.k.device
        self.token = torch.zeros(attend.batch, dtype=torch.int64, device=device)
        self.position = torch.full((1,), attend.max_len - 1, dtype=torch.int64, device=device)
        self.model, self.attend = model, attend
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):  # warm-up off the default stream (allocator, cuBLAS handles)
            for _ in range(2):
                self._step()
        torch.cuda.current_stream(device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.next = self._step()

    def _step(self) -> Tensor:
        return greedy_step(self.model, self.attend, self.token, self.position)

    def __call__(self, token: Tensor, position: int) -> Tensor:
        self.token.copy_(token)
        self.position.fill_(position)
        self.graph.replay()
        return self.next


@torch.inference_mode()
def greedy_static(
    model: Transformer, prompts: list[list[int]], steps: int, capture: bool | None = None, meter: Meter | None = None
) -> BatchResult:
    """Greedy decoding of equal-length `prompts` for `steps` tokens after the prefill's, on the static cache:
    the batched decode path of the quantization benchmarks. `capture` (default: on CUDA) replays the decode
    step as a CUDA graph; tokens stay on the device until the end, so the timed loop never waits on the host.
    `meter` measures the decode steps' energy (its window opens after the prefill and the capture)."""
    lengths = {len(p) for p in prompts}
    if len(lengths) != 1:
        raise ValueError(f"greedy_static needs prompts of one length (one shared position), got {sorted(lengths)}")
    (length,) = lengths
    context = context_tokens(model.cfg)
    check_prompt_fits(length, context, f"this {model.cfg.model_type} model")
    check_output_fits(length, steps + 1, context, f"this {model.cfg.model_type} model", "steps")
    device = next(model.parameters()).device
    capture = device.type == "cuda" if capture is None else capture
    if capture and device.type != "cuda":
        raise ValueError("CUDA-graph capture needs the model on a CUDA device")
    batch = len(prompts)
    attend = StaticCacheAttention(model, length + steps + 1, batch)
    step = _GraphStep(model, attend) if capture else None
    positions = torch.arange(length, device=device)
    attend.set_positions(positions)
    ids = torch.tensor(prompts, device=device).reshape(-1)
    last_rows = torch.arange(1, batch + 1, device=device) * length - 1
    token = model(ids, positions.repeat(batch), attend, logit_rows=last_rows).argmax(-1)  # (B,)
    out = torch.empty(batch, steps + 1, dtype=torch.int64, device=device)
    out[:, 0] = token
    _sync(device)
    if meter is not None:
        meter.begin("decode")
    t0 = time.perf_counter()
    for i in range(steps):
        if step is not None:
            token = step(token, length + i)
        else:
            token = greedy_step(model, attend, token, torch.full((1,), length + i, dtype=torch.int64, device=device))
        out[:, i + 1] = token
    _sync(device)
    seconds = time.perf_counter() - t0
    if meter is None:
        return BatchResult(out.tolist(), seconds, steps, step is not None)
    window = meter.end("decode")
    return BatchResult(out.tolist(), seconds, steps, step is not None, window.total_energy_j, window.provenance_summary)
