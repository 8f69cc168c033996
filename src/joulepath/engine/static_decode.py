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
