"""Continuous batching (Yu et al., Orca, OSDI 2022) with chunked prefill and priority preemption.

Every step the scheduler builds the next batch from scratch: first one decode token for each running
sequence, then prefill chunks (running ones first, then admitted waiting ones) up to the step's token
budget. Admission is by KV budget: a sequence enters only if its next chunk's blocks are free. When a
running sequence cannot grow, the lowest-priority, latest-arrived running sequence is preempted: its
blocks are freed and it waits to be recomputed (prompt and output so far), as vLLM does by default.

The hand-off to the runner is a list of `ScheduledChunk`s: what to compute for which sequence, and
whether the step samples from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import torch

from joulepath.engine.kv_cache import PagedKVCache
from joulepath.engine.sampling import SamplingParams


class Status(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Sequence:
    """A request inside the engine. `computed` tokens of prompt + output have KV in the cache."""

    seq_id: int
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    priority: int  # 0 = interactive (first), 1 = batch
    arrival_s: float
    generator: torch.Generator | None
    output_ids: list[int] = field(default_factory=list)
    computed: int = 0
    status: Status = Status.WAITING
    first_token_s: float | None = None
    finish_s: float | None = None
    finish_reason: str | None = None
    preemptions: int = 0
    energy_j: float = 0.0

    @property
    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def pending(self) -> int:
        """Tokens whose KV is not yet computed (the prompt, or after preemption everything so far)."""
        return len(self.prompt_ids) + len(self.output_ids) - self.computed

    def order_key(self) -> tuple[int, float, int]:
        return (self.priority, self.arrival_s, self.seq_id)


@dataclass(frozen=True)
class SchedulerConfig:
    max_batch: int = 64  # sequences running at once
    max_tokens_per_step: int = 256  # prefill chunk budget (decode tokens count too)


@dataclass(frozen=True)
class ScheduledChunk:
    """Positions [start, start + len(token_ids)) of `seq` to compute in this step (a prefill chunk, or one
    decode token). The runner writes their keys/values to the cache and returns logits for the chunks
    that sample."""

    seq: Sequence
    start: int  # position of token_ids[0] in the sequence (tokens before it have KV in the cache)
    token_ids: tuple[int, ...]
    samples: bool  # the chunk reaches the end of the sequence's known tokens: sample the next one
    # Speculative decoding (later): proposed tokens verified in the same forward. The runner refuses
    # them until that exists, so a scheduler that fills this cannot be silently ignored.
    draft_tokens: tuple[int, ...] = ()

    @property
    def end(self) -> int:
        return self.start + len(self.token_ids)


class Scheduler:
    def __init__(self, cache: PagedKVCache, config: SchedulerConfig) -> None:
        self.cache, self.config = cache, config
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        max_tokens = self.cache.n_blocks * self.cache.block_size
        if len(seq.prompt_ids) + seq.params.max_tokens > max_tokens:
            raise ValueError(
                f"request {seq.request_id}: prompt ({len(seq.prompt_ids)}) + max_tokens ({seq.params.max_tokens}) "
                f"exceeds the KV cache ({max_tokens} tokens); shorten it or give the engine more KV memory"
            )
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> list[ScheduledChunk]:
        """The next step's chunks, in batch order; blocks for them are reserved in the cache."""
        self.running.sort(key=Sequence.order_key)
        self.waiting.sort(key=Sequence.order_key)
        budget = self.config.max_tokens_per_step
        chunks: list[ScheduledChunk] = []
        for seq in list(self.running):  # decode tokens and unfinished prefills, highest priority first
            if seq.status is not Status.RUNNING or budget <= 0:
                continue
            n = 1 if seq.pending == 1 else min(seq.pending, budget)
            if not self._make_room(seq, seq.computed + n):
                continue
            chunks.append(_chunk(seq, n))
            budget -= n
        while self.waiting and budget > 0 and len(self.running) < self.config.max_batch:
            seq = self.waiting[0]
            n = min(seq.pending, budget)
            if self.cache.extra_blocks(seq.seq_id, seq.computed + n) > self.cache.free_blocks:
                break  # admission by KV budget: wait for blocks to free up
            self.waiting.pop(0)
            seq.status = Status.RUNNING
            self.running.append(seq)
            self.cache.reserve(seq.seq_id, seq.computed + n)
            chunks.append(_chunk(seq, n))
            budget -= n
        return chunks

    def _make_room(self, seq: Sequence, total_tokens: int) -> bool:
        """Reserve blocks for `seq`, preempting lower-priority running sequences if needed.
        Returns False if `seq` itself had to be preempted."""
        while self.cache.extra_blocks(seq.seq_id, total_tokens) > self.cache.free_blocks:
            victim = max(self.running, key=Sequence.order_key)
            self._preempt(victim)
            if victim is seq:
                return False
        self.cache.reserve(seq.seq_id, total_tokens)
        return True

    def _preempt(self, seq: Sequence) -> None:
        self.cache.release(seq.seq_id)
        self.running.remove(seq)
        seq.status, seq.computed = Status.WAITING, 0
        seq.preemptions += 1
        self.waiting.append(seq)

    def finish(self, seq: Sequence, reason: str, now_s: float) -> None:
        self.cache.release(seq.seq_id)
        if seq in self.running:
            self.running.remove(seq)
        seq.status, seq.finish_reason, seq.finish_s = Status.FINISHED, reason, now_s

    def abort_all(self, reason: str, now: Callable[[], float]) -> list[Sequence]:
        out = [*self.running, *self.waiting]
        for seq in out:
            self.finish(seq, reason, now())
        self.waiting.clear()
        return out


def _chunk(seq: Sequence, n: int) -> ScheduledChunk:
    """The next `n` uncomputed tokens of `seq`."""
    ids = seq.all_ids
    return ScheduledChunk(seq, seq.computed, tuple(ids[seq.computed : seq.computed + n]), seq.computed + n == len(ids))
