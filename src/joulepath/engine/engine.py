"""The engine: requests in, tokens out, one scheduler step at a time.

Data flow per step: Scheduler.schedule() -> runner.run_step() (one forward over paged KV) -> sample
each sequence that finished its prompt -> stop checks -> per-request records. Each step runs inside a
meter window; the window's joules are shared across the step's requests by the ledger's rule
(tokens processed), so every finished request carries its energy and that energy's provenance.

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

from joulepath.engine.context import check_prompt_fits, context_tokens, model_label, output_room
from joulepath.engine.kv_cache import PagedKVCache
from joulepath.engine.runner import run_step
from joulepath.engine.sampling import SamplingParams, sample_token
from joulepath.engine.scheduler import Schedule, Scheduler, SchedulerConfig, Sequence, Status
from joulepath.engine.scopes import scope
from joulepath.meter import Meter, attribute, auto_meter
from joulepath.model.checkpoint import LoadedModel

PRIORITY = {"interactive": 0, "batch": 1}


@dataclass(frozen=True)
class EngineConfig:
    kv_memory_bytes: int = 256 * 2**20  # KV-cache budget; sets the block pool size
    block_size: int = 16
    max_batch: int = 64
    max_tokens_per_step: int = 256

    def __post_init__(self) -> None:
        for name in ("kv_memory_bytes", "block_size", "max_batch", "max_tokens_per_step"):
            if getattr(self, name) < 1:  # 0 would leave the scheduler looping without ever admitting work
                raise ValueError(f"EngineConfig.{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class RequestRecord:
    """What one finished request cost. Times in seconds; energy with its provenance."""

    request_id: str
    prompt_tokens: int
    output_tokens: int
    ttft_s: float  # arrival -> first output token
    tpot_s: float  # mean time per output token after the first
    e2e_s: float
    energy_j: float
    energy_provenance: str
    finish_reason: str
    preemptions: int
    capped_max_tokens: int | None = None  # set when prompt + max_tokens would run past the context: the cap used


@dataclass(frozen=True)
class Completion:
    request_id: str
    text: str
    output_ids: list[int]
    record: RequestRecord


@dataclass(frozen=True)
class StepOutput:
    request_id: str
    new_token: int | None
    text_delta: str
    finished: bool


class Engine:
    """Continuous-batching engine over one loaded model."""

    def __init__(self, loaded: LoadedModel, config: EngineConfig | None = None, meter: Meter | None = None) -> None:
        self.loaded, self.config = loaded, config or EngineConfig()
        p = next(loaded.model.parameters())
        self.cache = PagedKVCache.from_budget(
            loaded.config, self.config.kv_memory_bytes, self.config.block_size, p.device, p.dtype
        )
        self.scheduler = Scheduler(self.cache, SchedulerConfig(self.config.max_batch, self.config.max_tokens_per_step))
        self.meter = meter or auto_meter()
        self.records: list[RequestRecord] = []
        self._ids = itertools.count()
        self._seqs: dict[str, Sequence] = {}
        self._provenance = "none"
        self._capped: dict[str, int] = {}  # request id -> max_tokens after the context cap

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
    ) -> str:
        """Queue a request; returns its id. Raises ValueError for an empty prompt or bad ids, and
        ContextLengthError for a prompt that leaves no room in the model's context; `max_tokens` is capped
        so that prompt + output fits the context (the record's `capped_max_tokens` says so)."""
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
        seq = Sequence(seq_id, rid, ids, params, PRIORITY[priority], time.perf_counter(), gen)
        self.scheduler.add(seq)
        self._seqs[rid] = seq
        return rid

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def step(self) -> list[StepOutput]:
        """Run one scheduler step; returns what each request in it produced."""
        with scope("scheduler"):
            schedule = self.scheduler.schedule()
            if not schedule.chunks:
                return []
            rows = [i for i, s in enumerate(schedule.samples) if s]
        with scope("meter"):
            self.meter.begin("step")
        logits = run_step(self.loaded.model, self.cache, schedule.chunks, rows)
        outputs = []
        with scope("scheduler"):
            for seq, chunk in zip(schedule.sequences, schedule.chunks, strict=True):
                seq.computed = chunk.end
        with scope("sampling+detokenize"):
            for row, i in enumerate(rows):
                outputs.append(self._emit(schedule.sequences[i], logits[row]))
        with scope("meter"):
            window = self.meter.end("step")
        with scope("scheduler"):
            self._share_energy(window.total_energy_j, schedule, window.provenance_summary)
            for out in outputs:
                if out.finished:
                    self.records.append(self._record(self._seqs[out.request_id]))
        return outputs

    def _share_energy(self, energy_j: float, schedule: Schedule, provenance: str) -> None:
        tokens = {str(s.seq_id): float(len(c.tokens)) for s, c in zip(schedule.sequences, schedule.chunks, strict=True)}
        shares = attribute(energy_j, tokens)
        for seq in schedule.sequences:
            seq.energy_j += shares[str(seq.seq_id)]
        self._provenance = provenance

    def _emit(self, seq: Sequence, logits: torch.Tensor) -> StepOutput:
        token = sample_token(logits, seq.params, seq.generator)
        now = time.perf_counter()
        seq.output_ids.append(token)
        seq.first_token_s = seq.first_token_s or now
        stops = seq.params.stop_token_ids
        if stops is None:
            stops = () if seq.params.ignore_eos else self.loaded.config.eos_token_ids
        old_text = seq.text
        full = self.loaded.tokenizer.decode(_text_ids(seq.output_ids, (*self.loaded.config.eos_token_ids, *stops)))
        reason = None
        for s in seq.params.stop:
            cut = full.find(s)
            if cut >= 0:
                full, reason = full[:cut], "stop"
        if reason is None and token in stops:
            reason = "stop"
        if reason is None and len(seq.output_ids) >= seq.params.max_tokens:
            reason = "length"
        seq.text = full
        if reason:
            self.scheduler.finish(seq, reason, now)
        delta = full[len(old_text) :] if full.startswith(old_text) else full
        return StepOutput(seq.request_id, token, delta, reason is not None)

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
        )

    def run_until_done(self) -> None:
        while self.has_work():
            self.step()

    def generate(
        self, prompts: list[str] | list[list[int]], params: SamplingParams | None = None, priority: str = "interactive"
    ) -> list[Completion]:
        """Serve all prompts together (continuous batching) and return them in order."""
        ids = [self.add_request(p, params, priority) for p in prompts]
        self.run_until_done()
        by_id = {r.request_id: r for r in self.records}
        return [Completion(i, self._seqs[i].text, list(self._seqs[i].output_ids), by_id[i]) for i in ids]

    def stream(self, prompt: str | list[int], params: SamplingParams | None = None) -> Iterator[str]:
        """Yield text as it is generated (other queued requests keep being served meanwhile)."""
        rid = self.add_request(prompt, params)
        while self._seqs[rid].status is not Status.FINISHED:
            for out in self.step():
                if out.request_id == rid and out.text_delta:
                    yield out.text_delta

    def record(self, request_id: str) -> RequestRecord:
        return next(r for r in self.records if r.request_id == request_id)

    def text_of(self, request_id: str) -> str:
        """The text generated so far for a request (all of it once finished)."""
        return self._seqs[request_id].text


def _text_ids(output_ids: list[int], marker_ids: tuple[int, ...]) -> list[int]:
    """The generated ids that are text: end-of-sequence markers (`<|end|>`, `</s>`) and stop ids end a
    sequence and are never part of its text, even where `ignore_eos` generated past one."""
    return [i for i in output_ids if i not in marker_ids] if marker_ids else output_ids
