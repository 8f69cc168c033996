"""Continuous batching (Yu et al., Orca, OSDI 2022) with chunked prefill and priority preemption.

Every step the scheduler builds the next batch from scratch: first one decode token for each running
sequence, then prefill chunks (running ones first, then admitted waiting ones) up to the step's token
budget. Admission is by KV budget: a sequence enters only if its next chunk's blocks are free. When a
running sequence cannot grow, the lowest-priority, latest-arrived running sequence is preempted: its
blocks are freed and it waits to be recomputed (prompt and output so far), as vLLM does by default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import torch

from joulepath.engine.kv_cache import PagedKVCache
from joulepath.engine.runner import Chunk
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
    text: str = ""

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
class Schedule:
    """One step's work: chunks in batch order, and which of them end a prompt (so they sample)."""

    chunks: list[Chunk]
    sequences: list[Sequence]
    samples: list[bool]
    preempted: list[Sequence]


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

    def schedule(self) -> Schedule:
        self.running.sort(key=Sequence.order_key)
        self.waiting.sort(key=Sequence.order_key)
        budget = self.config.max_tokens_per_step
        chunks: list[Chunk] = []
        seqs: list[Sequence] = []
        samples: list[bool] = []
        preempted: list[Sequence] = []
        for seq in list(self.running):  # decode tokens and unfinished prefills, highest priority first
            if seq.status is not Status.RUNNING or budget <= 0:
                continue
            n = 1 if seq.pending == 1 else min(seq.pending, budget)
            if not self._make_room(seq, seq.computed + n, preempted):
                continue
            self._add_chunk(seq, n, chunks, seqs, samples)
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
            self._add_chunk(seq, n, chunks, seqs, samples)
            budget -= n
        return Schedule(chunks, seqs, samples, preempted)

    def _add_chunk(self, seq: Sequence, n: int, chunks: list[Chunk], seqs: list[Sequence], samples: list[bool]) -> None:
        ids = seq.all_ids
        chunks.append(Chunk(seq.seq_id, seq.computed, ids[seq.computed : seq.computed + n]))
        seqs.append(seq)
        samples.append(seq.computed + n == len(ids))

    def _make_room(self, seq: Sequence, total_tokens: int, preempted: list[Sequence]) -> bool:
        """Reserve blocks for `seq`, preempting lower-priority running sequences if needed.
        Returns False if `seq` itself had to be preempted."""
        while self.cache.extra_blocks(seq.seq_id, total_tokens) > self.cache.free_blocks:
            victim = max(self.running, key=Sequence.order_key)
            self._preempt(victim)
            preempted.append(victim)
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
