"""Continuous batching (Yu et al., Orca, OSDI 2022) with chunked prefill and priority preemption.

Every step the scheduler builds the next batch from scratch: first one decode token for each running
sequence, then prefill chunks (running ones first, then admitted waiting ones) up to the step's token
budget. Admission is by KV budget: a sequence enters only if its next chunk's blocks are free. When a
running sequence cannot grow, the lowest-priority, latest-arrived running sequence is preempted: its
blocks are freed and it waits to be recomputed (prompt and output so far), as vLLM does by default.

The hand-off to the runner is a list of `ScheduledChunk`s: what to compute for which sequence, and
whether the step samples from it.

With a prefix cache (`engine/prefix_cache.py`), an admitted sequence starts with the cached blocks of its
prefix and its first chunk starts after them; cached blocks nobody holds are evicted before anything is
preempted; and within a priority class the waiting sequence with the longest cached prefix is admitted
first, unless an older one has been passed over `MAX_BYPASSES` times (so nothing starves). With offload
tiers, a hit continues into blocks evicted to host memory or disk, copied back at admission where that is
cheaper than recomputing them (`engine/kv_offload.py`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import torch

from joulepath.engine.kv_cache import PagedKVCache
from joulepath.engine.prefix_cache import PrefixCache, PrefixState
from joulepath.engine.sampling import SamplingParams
from joulepath.engine.scopes import scope
from joulepath.engine.speculative import SpecState, Speculator


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
    logprob_sum: float = 0.0  # natural-log probabilities of the emitted tokens (EngineConfig.track_logprobs)
    logprob_min: float = 0.0
    prefix: PrefixState = field(default_factory=PrefixState)  # block hashes, salt (prefix cache only)
    cached_prompt_tokens: int = 0  # prompt tokens served from the prefix cache at first admission
    restored_prompt_tokens: int = 0  # of those, copied back from an offload tier
    bypassed: int = 0  # times a younger sequence of its class was admitted first (cache-aware order)
    spec: SpecState = field(default_factory=SpecState)  # speculative decoding counts (and MTP's hidden state)

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
    # Speculative decoding: proposed tokens computed after token_ids in the same forward (their KV is
    # written too); the runner returns logits for the last token and every draft, to verify them.
    draft_tokens: tuple[int, ...] = ()

    @property
    def end(self) -> int:
        """Position after the chunk's known tokens (drafts excluded: their KV is kept only if accepted)."""
        return self.start + len(self.token_ids)

    @property
    def tokens(self) -> tuple[int, ...]:
        """Everything the forward computes: the known tokens, then the drafts."""
        return self.token_ids + self.draft_tokens

    @property
    def span_end(self) -> int:
        """Position after the last computed token, drafts included."""
        return self.start + len(self.token_ids) + len(self.draft_tokens)


@dataclass(frozen=True)
class Hit:
    """A waiting sequence's cached prefix: blocks in the pool, then offloaded blocks worth copying back."""

    blocks: list[int] = field(default_factory=list)
    offloaded: list[int] = field(default_factory=list)  # block hashes, in order
    declined: int = 0  # further offloaded blocks that recomputing is cheaper for

    @property
    def n_blocks(self) -> int:
        return len(self.blocks) + len(self.offloaded)


MAX_BYPASSES = 8  # a waiting sequence passed over this often by cache-aware admission goes next


class Scheduler:
    def __init__(
        self,
        cache: PagedKVCache,
        config: SchedulerConfig,
        prefix: PrefixCache | None = None,
        speculator: Speculator | None = None,
    ) -> None:
        self.cache, self.config, self.prefix, self.speculator = cache, config, prefix, speculator
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []
        self.kv_refused = False  # the last step's admission stopped at the KV budget (blocks were short)

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
        drafts = self._propose()
        self.kv_refused = False
        for seq in list(self.running):  # decode tokens and unfinished prefills, highest priority first
            if seq.status is not Status.RUNNING or budget <= 0:
                continue
            n = 1 if seq.pending == 1 else min(seq.pending, budget)
            if not self._make_room(seq, seq.computed + n):
                continue
            draft = self._fit_draft(seq, drafts.get(seq.seq_id, ()), budget - n)
            chunks.append(dataclasses.replace(_chunk(seq, n), draft_tokens=draft) if draft else _chunk(seq, n))
            budget -= n + len(draft)
        while self.waiting and budget > 0 and len(self.running) < self.config.max_batch:
            seq, hit = self._next_waiting()
            n = min(seq.pending - hit.n_blocks * self.cache.block_size, budget)
            if not self._admit(seq, hit, n):
                self.kv_refused = True
                break  # admission by KV budget: wait for blocks to free up
            self._pass_over(seq)
            self.waiting.remove(seq)
            seq.status = Status.RUNNING
            self.running.append(seq)
            chunks.append(_chunk(seq, n))
            budget -= n
        return chunks

    def _propose(self) -> dict[int, tuple[int, ...]]:
        """Draft tokens for the running sequences that decode this step (none without a speculator)."""
        spec = self.speculator
        decoding = [s for s in self.running if s.status is Status.RUNNING and s.pending == 1]
        if spec is None or not decoding:
            return {}
        with scope("speculative.propose"):
            room = [s.params.max_tokens - len(s.output_ids) - 1 for s in decoding]  # drafts past the end are waste
            ks = spec.plan(decoding, room, measurable=not self._prefill_expected())
            if not any(ks):  # speculation is off for this step: the proposer is not asked at all
                return {}
            t0 = time.perf_counter()
            proposals = spec.proposer.propose(decoding, ks)
            spec.observe_propose(time.perf_counter() - t0, max(ks, default=0))
        return {s.seq_id: d[:k] for s, d, k in zip(decoding, proposals, ks, strict=True) if d and k}

    def _prefill_expected(self) -> bool:
        """Whether prefill will share this step: a running sequence still prefilling, or a waiting one that may
        be admitted (the batch has room, and the last step's admission did not stop at the KV budget: a server
        whose cache holds fewer sequences than max_batch, with a queue that never empties, runs decode-only
        steps that must count as measurable, or the cost fit would never form)."""
        return any(s.pending > 1 for s in self.running) or (
            bool(self.waiting) and len(self.running) < self.config.max_batch and not self.kv_refused
        )

    def _fit_draft(self, seq: Sequence, draft: tuple[int, ...], budget: int) -> tuple[int, ...]:
        """As much of `draft` as the step's token budget and the free blocks allow (drafts never preempt or
        evict), with its blocks reserved."""
        draft = draft[: max(0, budget)]
        while draft and self.cache.extra_blocks(seq.seq_id, seq.computed + 1 + len(draft)) > self.cache.free_blocks:
            draft = draft[:-1]
        if draft:
            self.cache.reserve(seq.seq_id, seq.computed + 1 + len(draft))
        return draft

    def _next_waiting(self) -> tuple[Sequence, Hit]:
        """The waiting sequence to admit next and its cached prefix (none without a prefix cache)."""
        head = self.waiting[0]
        if self.prefix is None:
            return head, Hit()
        if head.bypassed >= MAX_BYPASSES:
            return head, self._hit(head)
        hits = [(s, self._hit(s)) for s in self.waiting if s.priority == head.priority]
        return max(hits, key=lambda sh: sh[1].n_blocks)  # max keeps the first (oldest) of equal hits

    def _hit(self, seq: Sequence) -> Hit:
        assert self.prefix is not None
        ids = seq.all_ids
        blocks = self.prefix.match(seq.prefix, ids)
        offloaded, declined = self.prefix.match_offloaded(seq.prefix, ids, len(blocks))
        return Hit(blocks, offloaded, declined)

    def _pass_over(self, admitted: Sequence) -> None:
        """Count one bypass for each older waiting sequence of `admitted`'s class (the waiting list is sorted)."""
        for s in self.waiting:
            if s is admitted:
                return
            if s.priority == admitted.priority:
                s.bypassed += 1

    def _admit(self, seq: Sequence, hit: Hit, n: int) -> bool:
        """Give `seq` its cached blocks (offloaded ones copied back) and blocks for its next `n` tokens,
        evicting unreferenced cached blocks if the pool is short; False (taking nothing) if even that is not
        enough."""
        bs = self.cache.block_size
        total = seq.computed + hit.n_blocks * bs + n
        need = (
            self.cache.blocks_for(total) - len(hit.blocks)
            if hit.n_blocks
            else self.cache.extra_blocks(seq.seq_id, total)
        )
        if self.prefix is None:
            if need > self.cache.free_blocks:
                return False
        else:
            spare = self.prefix.evictable_blocks - self.prefix.evictable_among(seq.prefix, len(hit.blocks))
            if need > self.cache.free_blocks + spare:
                return False
            self.prefix.attach(seq.seq_id, seq.prefix, hit.blocks)
            self.prefix.count_modelled(seq.prefix, seq.all_ids, len(hit.blocks))
            fetched = self.prefix.fetch(hit.offloaded) if hit.offloaded else []
            self.prefix.evict(need - self.cache.free_blocks)
            if fetched:
                self.prefix.restore(seq.seq_id, fetched)
            self.prefix.declined_blocks += hit.declined
            seq.computed += hit.n_blocks * bs
            if seq.preemptions == 0:
                seq.cached_prompt_tokens = seq.computed
                seq.restored_prompt_tokens = len(hit.offloaded) * bs
        self.cache.reserve(seq.seq_id, total)
        return True

    def advance(self, chunks: list[ScheduledChunk], accepted: dict[int, int] | None = None) -> None:
        """The runner computed `chunks`: their tokens have KV now, and blocks they filled become cached. With
        drafts, `accepted[seq_id]` of them are kept (their tokens are appended to the output by the caller
        afterwards); the rest's KV is dropped."""
        bs = self.cache.block_size
        for c in chunks:
            end = c.end + (accepted or {}).get(c.seq.seq_id, 0)
            c.seq.computed = end
            if c.draft_tokens:
                self.cache.truncate(c.seq.seq_id, end)
            if self.prefix is not None and end // bs > c.start // bs:
                ids = c.seq.all_ids if end <= len(c.seq.all_ids) else [*c.seq.all_ids, *c.draft_tokens]
                self.prefix.insert(c.seq.seq_id, c.seq.prefix, ids, c.start, end)

    def _make_room(self, seq: Sequence, total_tokens: int) -> bool:
        """Reserve blocks for `seq`, preempting lower-priority running sequences if needed.
        Returns False if `seq` itself had to be preempted."""
        while self.cache.extra_blocks(seq.seq_id, total_tokens) > self.cache.free_blocks:
            if self.prefix is not None and self.prefix.evict(1):
                continue  # unreferenced cached blocks go before any running sequence
            victim = max(self.running, key=Sequence.order_key)
            self._preempt(victim)
            if victim is seq:
                return False
        self.cache.reserve(seq.seq_id, total_tokens)
        return True

    def _release(self, seq: Sequence) -> None:
        if self.prefix is None:
            self.cache.release(seq.seq_id)
        else:
            self.prefix.release(seq.seq_id, seq.prefix)

    def _preempt(self, seq: Sequence) -> None:
        self._release(seq)
        self.running.remove(seq)
        seq.status, seq.computed = Status.WAITING, 0
        seq.preemptions += 1
        self.waiting.append(seq)

    def finish(self, seq: Sequence, reason: str, now_s: float) -> None:
        self._release(seq)
        if self.speculator is not None:
            self.speculator.proposer.forget(seq)
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:  # aborted before admission (or after a preemption)
            self.waiting.remove(seq)
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
