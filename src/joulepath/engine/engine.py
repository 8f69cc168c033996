"""The engine: requests in, tokens out, one scheduler step at a time.

Data flow per step: Scheduler.schedule() -> ScheduledChunks -> runner.run_step() (one forward over
paged KV) -> sample each chunk that ends a prompt -> EOS/length checks -> StepOutputs (token ids and
finish flags, no text) and per-request records. Each step runs inside a meter window; the window's
joules are shared across the step's requests by the ledger's rule (tokens processed), so every finished
request carries its energy and that energy's provenance.

Text is made outside the step (`engine/detokenize.py`: incremental, stop strings on the new text only)
by whoever drives the engine: `generate`/`stream` here, `joulepath.serving.frontend` for serving. A stop
string found there ends the request through `finish_request`.

    >>> from joulepath.model import load_model
    >>> engine = Engine(load_model("dummy:tiny-llama"))
    >>> out = engine.generate(["hello"], SamplingParams(max_tokens=4, ignore_eos=True))
    >>> len(out[0].output_ids)
    4
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from joulepath.engine import row_attention
from joulepath.engine.context import check_prompt_fits, context_tokens, model_label, output_room
from joulepath.engine.detokenize import TextDelta, TextStage
from joulepath.engine.kv_cache import PagedKVCache
from joulepath.engine.kv_offload import KVOffload, TierSpec
from joulepath.engine.prefix_cache import PrefixCache, PrefixState
from joulepath.engine.runner import run_step_features, run_step_hidden
from joulepath.engine.sampling import SamplingParams, sample_token
from joulepath.engine.scheduler import ScheduledChunk, Scheduler, SchedulerConfig, Sequence, Status
from joulepath.engine.scopes import scope
from joulepath.engine.speculative import PROPOSERS, EagleProposer, Speculator, make_proposer, verify
from joulepath.meter import Meter, attribute, auto_meter
from joulepath.model.checkpoint import LoadedModel, load_model
from joulepath.results import RequestRecord  # the result type: report reads it without the engine

PRIORITY = {"interactive": 0, "batch": 1}
ATTENTION_BACKENDS = ("auto", "sdpa", "row_invariant")
KEPT_RECORDS = 10_000  # `Engine.records` keeps the most recent ones: a long-running server keeps no history


@dataclass(frozen=True)
class EngineConfig:
    kv_memory_bytes: int = 256 * 2**20  # KV-cache budget; sets the block pool size
    block_size: int = 16
    max_batch: int = 64
    max_tokens_per_step: int = 256
    prefix_cache: bool = False  # reuse full KV blocks of shared prompt prefixes (engine/prefix_cache.py)
    # KV offload tiers under the prefix cache (engine/kv_offload.py): bytes of evicted blocks kept in host
    # memory (pinned under a GPU) and in a memory-mapped file in `offload_dir` (default: the temp folder).
    offload_host_bytes: int = 0
    offload_disk_bytes: int = 0
    offload_dir: str | None = None
    # A modelled tier (CXL memory, PIM) of this many bytes: no KV is stored, the blocks it would have served
    # are counted (its cost comes from the catalog, labelled estimated).
    offload_modelled_bytes: int = 0
    # Speculative decoding (engine/speculative.py): None (off), "prompt_lookup", "draft" (with
    # `draft_model`, e.g. jp-small for jp-large) or "mtp" (the model's shipped multi-token heads).
    speculative: str | None = None
    draft_model: str | None = None
    spec_max_k: int = 4  # most drafts per sequence per step
    kv_int8: bool = False  # int8 KV cache with per-token, per-head scales (not exact: gate it, optimize.levers)
    spec_adaptive: bool = True  # choose k (0 allowed) from measured acceptance and step cost; False: always max
    # Sum and minimum of each request's emitted tokens' log-probabilities in its record (a confidence signal
    # for the router's cascade); costs one log-softmax per sampled row, so off unless asked for.
    track_logprobs: bool = False
    # Attention kernel: "sdpa" (torch's), "row_invariant" (joulepath's C kernel, engine/row_attention.py: fp32
    # on a CPU; each token's output independent of the step's batch, padding and chunking, so greedy
    # speculative decoding is token-identical to plain decoding on the same kernel) or "auto" (row_invariant
    # for fp32 on an AVX-512 CPU at 1 torch thread, where it is also the faster kernel; SDPA elsewhere: see
    # row_attention.auto_declines for the measurements).
    attention: str = "auto"

    def __post_init__(self) -> None:
        for name in ("kv_memory_bytes", "block_size", "max_batch", "max_tokens_per_step"):
            if getattr(self, name) < 1:  # 0 would leave the scheduler looping without ever admitting work
                raise ValueError(f"EngineConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("offload_host_bytes", "offload_disk_bytes", "offload_modelled_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"EngineConfig.{name} must be >= 0, got {getattr(self, name)}")
        if (
            self.offload_host_bytes or self.offload_disk_bytes or self.offload_modelled_bytes
        ) and not self.prefix_cache:
            raise ValueError("KV offload tiers hold the prefix cache's evicted blocks: turn prefix_cache on too")
        if self.speculative is not None and self.speculative not in PROPOSERS:
            raise ValueError(f"EngineConfig.speculative must be one of {PROPOSERS} or None, got {self.speculative!r}")
        if self.spec_max_k < 1:
            raise ValueError(f"EngineConfig.spec_max_k must be >= 1, got {self.spec_max_k}")
        if self.attention not in ATTENTION_BACKENDS:
            raise ValueError(
                f"EngineConfig.attention must be one of {', '.join(ATTENTION_BACKENDS)}, got {self.attention!r}"
            )

    def offload_tiers(self) -> list[TierSpec]:
        """The configured offload tiers, fastest first (empty: offload off)."""
        tiers = [TierSpec("host", self.offload_host_bytes), TierSpec("disk", self.offload_disk_bytes)]
        return [t for t in tiers if t.capacity_bytes]


@dataclass(frozen=True)
class Completion:
    request_id: str
    text: str
    output_ids: list[int]
    record: RequestRecord


@dataclass(frozen=True)
class StepOutput:
    """What one request produced in a step: a token id, and whether the engine ended it (EOS, stop id or
    length; stop strings are found outside the engine, on the text)."""

    request_id: str
    token_id: int
    finished: bool


class Engine:
    """Continuous-batching engine over one loaded model."""

    def __init__(
        self,
        loaded: LoadedModel,
        config: EngineConfig | None = None,
        meter: Meter | None = None,
        draft: LoadedModel | None = None,
    ) -> None:
        """`draft`: the draft model already loaded (e.g. with the target's weight lever applied) for
        speculative = 'draft'; None loads `config.draft_model` as it is shipped."""
        self.loaded, self.config = loaded, config or EngineConfig()
        p = next(loaded.model.parameters())
        self.cache = PagedKVCache.from_budget(
            loaded.config, self.config.kv_memory_bytes, self.config.block_size, p.device, p.dtype, self.config.kv_int8
        )
        # The model's source, weight dtype (= the KV dtype here) and weight format (a quantized model's KV
        # differs) are part of every cached block's hash.
        tiers = self.config.offload_tiers()
        self.offload = (
            KVOffload(self.cache, tiers, self.config.offload_dir, self.config.offload_modelled_bytes)
            if tiers or self.config.offload_modelled_bytes
            else None
        )
        self.prefix_cache = (
            PrefixCache(
                self.cache, f"{loaded.source}:{p.dtype}:{getattr(loaded.model, 'weight_format', 'dense')}", self.offload
            )
            if self.config.prefix_cache
            else None
        )
        self.row_invariant = self._row_invariant(p)
        self.speculator = self._speculator(loaded, draft)
        self.scheduler = Scheduler(
            self.cache,
            SchedulerConfig(self.config.max_batch, self.config.max_tokens_per_step),
            self.prefix_cache,
            self.speculator,
        )
        self.meter = meter or auto_meter()
        self.records: list[RequestRecord] = []
        self._ids = itertools.count()
        self._seqs: dict[str, Sequence] = {}
        self._provenance = "none"
        self._capped: dict[str, int] = {}  # request id -> max_tokens after the context cap
        self._records: dict[str, RequestRecord] = {}

    def _row_invariant(self, p: torch.Tensor) -> bool:
        """Whether attention runs on the row-invariant kernel (`EngineConfig.attention`); asked for where it
        cannot run, a ValueError says why and what to use instead."""
        if self.config.attention == "sdpa":
            return False
        why = None
        if p.device.type != "cpu" or p.dtype is not torch.float32:
            why = f"it takes fp32 on a CPU and this model is {p.dtype} on {p.device}"
        elif self.config.kv_int8:
            why = "it reads an fp32 KV cache and kv_int8 is on"
        elif self.loaded.config.head_dim > row_attention.MAX_HEAD_DIM:
            why = f"head_dim {self.loaded.config.head_dim} > {row_attention.MAX_HEAD_DIM}"
        elif self.config.attention == "auto" and row_attention.auto_declines():
            return False  # `auto` keeps SDPA where the kernel would be slower: no build, no error
        elif (reason := row_attention.unavailable_reason()) is not None:
            why = reason
        if why is not None and self.config.attention == "row_invariant":
            raise ValueError(f"EngineConfig.attention='row_invariant' cannot run here: {why}; use 'sdpa' or 'auto'")
        return why is None

    def _speculator(self, loaded: LoadedModel, draft: LoadedModel | None) -> Speculator | None:
        cfg = self.config
        if cfg.speculative is None:
            return None
        if cfg.speculative != "draft":
            draft = None
        elif draft is None:
            if cfg.draft_model is None:
                raise ValueError("speculative = 'draft' needs EngineConfig.draft_model (for example jp-small)")
            p = next(loaded.model.parameters())
            draft = load_model(cfg.draft_model, device=p.device, dtype=p.dtype)
        proposer = make_proposer(cfg.speculative, loaded, draft, cfg.kv_memory_bytes // 4, cfg.block_size)
        return Speculator(proposer, cfg.spec_max_k, cfg.spec_adaptive)

    def close(self) -> None:
        """Give back what outlives the engine's memory: the disk tier's file."""
        if self.offload is not None:
            self.offload.close()

    @property
    def context_tokens(self) -> int:
        """Positions one request (prompt + output) may occupy: the model's max_position_embeddings."""
        return context_tokens(self.loaded.config)

    def add_request(
        self,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        priority: str = "interactive",
        request_id: str | None = None,
        cache_salt: str = "",
        arrival_s: float | None = None,
    ) -> str:
        """Queue a request; returns its id. Raises ValueError for an empty prompt or bad ids, and
        ContextLengthError for a prompt that leaves no room in the model's context; `max_tokens` is capped
        so that prompt + output fits the context (the record's `capped_max_tokens` says so). With the prefix
        cache on, only requests with the same `cache_salt` (a tenant's) share cached blocks. `arrival_s`
        (perf_counter seconds; default now): when the request arrived, if it waited elsewhere first."""
        params = params or SamplingParams()
        ids = self.loaded.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise ValueError("empty prompt: give at least one token")
        if max(ids) >= self.loaded.config.vocab_size or min(ids) < 0:
            raise ValueError(f"token ids must be in [0, {self.loaded.config.vocab_size})")
        if priority not in PRIORITY:
            raise ValueError(f"priority must be one of {list(PRIORITY)}, got {priority!r}")
        seq_id = next(self._ids)
        rid = request_id or f"req-{seq_id}"
        check_prompt_fits(len(ids), self.context_tokens, model_label(self.loaded.source), f"request {rid}'s prompt")
        room = output_room(len(ids), params.max_tokens, self.context_tokens)
        if room < params.max_tokens:
            params = dataclasses.replace(params, max_tokens=room)
            self._capped[rid] = room
        gen = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
        arrived = time.perf_counter() if arrival_s is None else arrival_s
        seq = Sequence(seq_id, rid, ids, params, PRIORITY[priority], arrived, gen)
        seq.prefix = PrefixState(salt=cache_salt)
        self.scheduler.add(seq)
        self._seqs[rid] = seq
        return rid

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def step(self) -> list[StepOutput]:
        """Run one scheduler step; returns the token each sampling request produced (no text)."""
        with scope("scheduler"):
            chunks = self.scheduler.schedule()
            if not chunks:
                return []
        with scope("meter"):
            self.meter.begin("step")
        t0 = time.perf_counter()
        feature_proposer = self._feature_proposer()
        every: torch.Tensor | None = None
        if feature_proposer is None:
            logits, hidden = run_step_hidden(self.loaded.model, self.cache, chunks, self.row_invariant)
        else:  # the draft block reads the target's features of every position
            logits, hidden, every = run_step_features(self.loaded.model, self.cache, chunks, self.row_invariant)
        if self.offload is not None or self.speculator is not None:  # measured step costs
            if logits.is_cuda:
                torch.cuda.synchronize()
            seconds, tokens = time.perf_counter() - t0, sum(len(c.tokens) for c in chunks)
            if self.offload is not None:  # the prefill cost per token that restores are weighed against
                self.offload.observe_step(seconds, tokens)
            if self.speculator is not None and all(len(c.token_ids) == 1 for c in chunks):
                self.speculator.cost.observe(tokens, seconds)  # decode/verify steps: what drafts are weighed against
        with scope("sampling+detokenize"):
            picked = self._pick(chunks, logits, hidden)
        with scope("scheduler"):
            self.scheduler.advance(chunks, {seq.seq_id: accepted for seq, _, accepted in picked})
        if feature_proposer is not None and every is not None:  # after advance: the blocks it filled are hashed
            feature_proposer.observe_step(chunks, every, {seq.seq_id: accepted for seq, _, accepted in picked})
        with scope("sampling+detokenize"):
            outputs = [out for seq, tokens, _ in picked for out in self._emit_all(seq, tokens)]
        with scope("meter"):
            window = self.meter.end("step")
        with scope("scheduler"):
            self._share_energy(window.total_energy_j, chunks, window.provenance_summary)
            for out in outputs:
                if out.finished:
                    self._add_record(self._seqs[out.request_id])
        return outputs

    def _feature_proposer(self) -> EagleProposer | None:
        proposer = self.speculator.proposer if self.speculator is not None else None
        return proposer if isinstance(proposer, EagleProposer) else None

    def _share_energy(self, energy_j: float, chunks: list[ScheduledChunk], provenance: str) -> None:
        shares = attribute(energy_j, {str(c.seq.seq_id): float(len(c.token_ids)) for c in chunks})
        for c in chunks:
            c.seq.energy_j += shares[str(c.seq.seq_id)]
        self._provenance = provenance

    def _pick(
        self, chunks: list[ScheduledChunk], logits: torch.Tensor, hidden: torch.Tensor
    ) -> list[tuple[Sequence, list[int], int]]:
        """(sequence, tokens to emit, drafts accepted) for each sampling chunk: one sampled token, or the
        verified run of drafts plus the target's own next token."""
        picked, row = [], 0
        for c in chunks:
            if not c.samples:
                continue
            n = len(c.draft_tokens) + 1
            seq = c.seq
            if c.draft_tokens:
                tokens, accepted = verify(logits[row : row + n], c.draft_tokens, seq.params, seq.generator)
            else:
                tokens, accepted = [sample_token(logits[row], seq.params, seq.generator)], 0
            if self.speculator is not None:
                if seq.output_ids:  # a decode step (the first token comes from the prefill)
                    self.speculator.record(seq, len(c.draft_tokens), accepted)
                seq.spec.hidden = hidden[row + accepted]  # what produced the last emitted token (MTP heads)
            if self.config.track_logprobs:
                _add_logprobs(seq, logits[row : row + len(tokens)], tokens)
            picked.append((seq, tokens, accepted))
            row += n
        return picked

    def _emit_all(self, seq: Sequence, tokens: list[int]) -> list[StepOutput]:
        """Append tokens one by one until the sequence finishes (EOS, stop id, length)."""
        outs = []
        for token in tokens:
            outs.append(self._emit(seq, token))
            if outs[-1].finished:
                break
        return outs

    def _emit(self, seq: Sequence, token: int) -> StepOutput:
        now = time.perf_counter()
        seq.output_ids.append(token)
        seq.first_token_s = seq.first_token_s or now
        stops = seq.params.stop_token_ids
        if stops is None:
            stops = () if seq.params.ignore_eos else self.loaded.config.eos_token_ids
        reason = "stop" if token in stops else "length" if len(seq.output_ids) >= seq.params.max_tokens else None
        if reason:
            self.scheduler.finish(seq, reason, now)
        return StepOutput(seq.request_id, token, reason is not None)

    def finish_request(self, request_id: str, reason: str) -> None:
        """End a request from outside the step (a stop string found in its text, an output guard).
        Its KV blocks are freed now and its record is written; a finished request is left as it is."""
        seq = self._seqs[request_id]
        if seq.status is Status.FINISHED:
            return
        self.scheduler.finish(seq, reason, time.perf_counter())
        self._add_record(seq)

    def abort_request(self, request_id: str) -> None:
        """A client gone: the request leaves the scheduler (waiting or running) and its KV blocks are freed
        now; it writes no record and is forgotten. An unknown or finished request is only forgotten."""
        seq = self._seqs.get(request_id)
        if seq is not None and seq.status is not Status.FINISHED:
            self.scheduler.finish(seq, "abort", time.perf_counter())
        self.forget(request_id)

    def request_params(self, request_id: str) -> tuple[SamplingParams, str, list[int], float]:
        """(params after the context cap, priority class, prompt ids, arrival perf_counter s) a request was
        queued with: what it takes to serve it again on another engine (the router's cascade)."""
        seq = self._seqs[request_id]
        priority = next(name for name, rank in PRIORITY.items() if rank == seq.priority)
        return seq.params, priority, list(seq.prompt_ids), seq.arrival_s

    def forget(self, request_id: str) -> None:
        """Drop what the engine keeps per request (its sequence, record, cap) once the caller has read it."""
        self._seqs.pop(request_id, None)
        self._records.pop(request_id, None)
        self._capped.pop(request_id, None)

    def _add_record(self, seq: Sequence) -> None:
        record = self._record(seq)
        self.records.append(record)
        if len(self.records) > KEPT_RECORDS:
            del self.records[: len(self.records) - KEPT_RECORDS // 2]  # amortised: trims once per 5,000
        self._records[seq.request_id] = record

    def text_stage(self) -> TextStage:
        """A detokenizer set for this engine's tokenizer (EOS ids are never text)."""
        return TextStage(self.loaded.tokenizer, self.loaded.config.eos_token_ids)

    def step_text(self, texts: TextStage) -> list[TextDelta]:
        """One step, then its tokens as text, outside the step; a request whose text reached a stop string
        is finished here. Every request in the step must have been opened in `texts`."""
        outputs = self.step()
        deltas, stopped = [], set()
        with scope("sampling+detokenize"):
            for o in outputs:
                if o.request_id in stopped:  # a stop string ended it earlier in this step (several drafts accepted)
                    continue
                deltas.append(texts.add(o.request_id, o.token_id, o.finished))
                if deltas[-1].stopped:
                    stopped.add(o.request_id)
        for d in deltas:
            if d.stopped:
                self.finish_request(d.request_id, "stop")
        return deltas

    def _record(self, seq: Sequence) -> RequestRecord:
        assert seq.first_token_s is not None and seq.finish_s is not None and seq.finish_reason
        n = len(seq.output_ids)
        return RequestRecord(
            request_id=seq.request_id,
            prompt_tokens=len(seq.prompt_ids),
            output_tokens=n,
            ttft_s=seq.first_token_s - seq.arrival_s,
            tpot_s=(seq.finish_s - seq.first_token_s) / (n - 1) if n > 1 else 0.0,
            e2e_s=seq.finish_s - seq.arrival_s,
            energy_j=seq.energy_j,
            energy_provenance=self._provenance,
            finish_reason=seq.finish_reason,
            preemptions=seq.preemptions,
            capped_max_tokens=self._capped.get(seq.request_id),
            cached_prompt_tokens=seq.cached_prompt_tokens,
            restored_prompt_tokens=seq.restored_prompt_tokens,
            decode_steps=seq.spec.decode_steps,
            draft_proposed=seq.spec.proposed,
            draft_accepted=seq.spec.accepted,
            logprob_sum=seq.logprob_sum,
            logprob_min=seq.logprob_min,
        )

    def run_until_done(self) -> None:
        """Serve every queued request to the end (stop strings included: their text is made as they go)."""
        texts = self._open_texts()
        while self.has_work():
            self.step_text(texts)

    def _open_texts(self) -> TextStage:
        texts = self.text_stage()
        for seq in self._seqs.values():
            if seq.status is not Status.FINISHED:
                texts.open(seq.request_id, seq.params)
        return texts

    def generate(
        self, prompts: list[str] | list[list[int]], params: SamplingParams | None = None, priority: str = "interactive"
    ) -> list[Completion]:
        """Serve all prompts together (continuous batching) and return them in order."""
        ids = [self.add_request(p, params, priority) for p in prompts]
        texts = self._open_texts()
        while self.has_work():
            self.step_text(texts)
        return [Completion(i, texts.text_of(i), list(self._seqs[i].output_ids), self._records[i]) for i in ids]

    def stream(self, prompt: str | list[int], params: SamplingParams | None = None) -> Iterator[str]:
        """Yield text as it is generated (other queued requests keep being served meanwhile)."""
        rid = self.add_request(prompt, params)
        texts = self._open_texts()  # requests queued earlier are served meanwhile: their stop strings count too
        while self._seqs[rid].status is not Status.FINISHED:
            for delta in self.step_text(texts):
                if delta.request_id == rid and delta.text:
                    yield delta.text

    def record(self, request_id: str) -> RequestRecord:
        """The record of a finished request."""
        return self._records[request_id]

    def output_ids(self, request_id: str) -> list[int]:
        """The ids generated so far for a request (EOS and stop ids included)."""
        return list(self._seqs[request_id].output_ids)


def _add_logprobs(seq: Sequence, logits: torch.Tensor, tokens: list[int]) -> None:
    """Fold the emitted tokens' log-probabilities (rows of `logits`, one per token) into the sequence."""
    chosen = torch.log_softmax(logits.float(), -1)[torch.arange(len(tokens)), torch.tensor(tokens)]  # (n,)
    values = chosen.tolist()
    seq.logprob_sum += sum(values)
    seq.logprob_min = min(values) if not seq.output_ids else min(seq.logprob_min, *values)
