"""The measured link between what is served here and what the fleet is projected to cost.

Two hand-offs, both outside `hw` (which never imports the model layer or torch):

- `transformer_spec`: the one description of a model. A loaded model's `ModelConfig` (or a model
  preset's name) becomes the hardware model's `TransformerSpec`, so the profiler's FLOP/byte counts
  (`hw.perf.operator_work`) and the fleet projection describe the same architecture.
- `work_profile`: what one configuration measured when it was served here (its `results.LocalRun`
  repetitions, pooled) becomes the `hw.work.WorkProfile` its fleet projection takes
  (`hw.fleet.project_trace(work=...)`), so an optimization measured on this machine changes the
  projected device energy, the facility load and the wall energy (`run.fleet_outcome`).

This module imports torch only through the model layer, and only when a preset name is looked up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from joulepath.hw.perf import TransformerSpec, model_presets
from joulepath.hw.work import WEIGHT_DTYPE_BY_BYTES, WorkProfile

if TYPE_CHECKING:
    from joulepath.model.config import ModelConfig
    from joulepath.results import LocalComparison, LocalRun, ServedRequest

#: torch dtype (as `str(tensor.dtype)` prints it) -> the hardware model's dtype name.
TORCH_DTYPES = {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16", "torch.int8": "int8"}
DERIVED = "derived from the served model's config (joulepath.link.transformer_spec)"


def transformer_spec(model: ModelConfig | str, dtype: str = "bf16") -> TransformerSpec:
    """The hardware model's description of `model`: a loaded model's `ModelConfig`, or a preset name
    (the model layer's presets, `dummy:` prefix allowed, then the hardware model's own public-model
    presets). `dtype` (`fp32`, `bf16`, ...) is the weights' and KV cache's storage format.

    >>> transformer_spec("llama-3.1-8b").params_active > 7e9
    True
    """
    if isinstance(model, str):
        name = model.removeprefix("dummy:").strip().lower()
        if name in model_presets():
            return model_presets()[name].with_dtypes(dtype, dtype)
        from joulepath.model.config import preset  # torch loads with the model layer: only for its presets

        return _from_config(preset(name), name, dtype)
    return _from_config(model, model.model_type, dtype)


def _from_config(cfg: ModelConfig, name: str, dtype: str) -> TransformerSpec:
    window = cfg.sliding_window or 0
    return TransformerSpec(
        name=name,
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        n_heads=cfg.n_heads,
        n_kv_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim,
        d_ff=cfg.d_ff,
        vocab_size=cfg.vocab_size,
        tie_embeddings=cfg.tie_embeddings,
        sliding_window=window,
        sliding_layer_fraction=1.0 if window else 0.0,  # Mistral-style: every layer slides
        weight_dtype=dtype,
        kv_dtype=dtype,
        source=DERIVED,
    )


def weight_format_bytes(measured: float | None) -> float | None:
    """The fleet model's weight format nearest a served model's measured bytes per weight (scales and
    zeros make INT8 1.01 and INT4 g128 0.53): None, as loaded, stays None.

    >>> weight_format_bytes(1.011), weight_format_bytes(0.531), weight_format_bytes(None)
    (1.0, 0.5, None)
    """
    if measured is None:
        return None
    return min(WEIGHT_DTYPE_BY_BYTES, key=lambda b: abs(b - measured))


def work_profile(runs: LocalRun | Sequence[LocalRun], prefix_hit_tokens: int | None = None) -> WorkProfile:
    """The work one configuration did when served here, pooled over the repetitions given (one run or
    several of the same configuration): token counts from their request records, the scheduler's limit,
    and the decode batches they reached from the requests' measured times (each repetition on its own
    clock). With `serve.repeat_over = "slices"` each repetition served other requests, so pooling every
    repetition projects the same requests for every configuration where one median repetition would not.

    Prefix-cache hits are the records' `cached_prompt_tokens` unless `prefix_hit_tokens` is given; draft
    tokens per decode step are the records' proposed and accepted drafts over their decode steps (0 with
    speculation off); bytes per weight and activation sparsity are what the served model's lever measured
    (the nearest fleet weight format; sparsity weighted by each repetition's tokens, 0 without TEAL); the
    small-tier share is the requests the router sent to the small tier (0 without tiered routing), and
    every other figure is the served model's own (`served_model_requests`)."""
    pool = same_configuration((runs,) if not isinstance(runs, Sequence) else tuple(runs))
    first = pool[0]
    per_run = served_model_requests(pool)
    requests = [q for served in per_run for q in served]
    prompt = sum(r.record.prompt_tokens for r in requests)
    if prefix_hit_tokens is None:
        prefix_hit_tokens = sum(r.record.cached_prompt_tokens for r in requests)
    steps = sum(r.record.decode_steps for r in requests)
    proposed = sum(r.record.draft_proposed for r in requests)
    accepted = sum(r.record.draft_accepted for r in requests)
    mean_batch, peak_batch = batches_in_flight(per_run)
    # The scheduler never runs more than its limit; a finish and the next first token stamped a hair apart
    # within one step can overlap in the records, so the limit bounds what they show.
    mean_batch, peak_batch = min(mean_batch, first.max_batch), min(peak_batch, first.max_batch)
    served_all = sum(len(r.requests) for r in pool)
    small = sum(r.small_tier_share * len(r.requests) for r in pool)
    reps = f" over {len(pool)} repetitions" if len(pool) > 1 else ""
    return WorkProfile(
        requests=len(requests),
        prompt_tokens=prompt,
        computed_prompt_tokens=prompt - prefix_hit_tokens,
        output_tokens=sum(r.record.output_tokens for r in requests),
        batch_limit=first.max_batch,
        mean_batch=mean_batch,
        peak_batch=peak_batch,
        bytes_per_weight=weight_format_bytes(first.bytes_per_weight),
        activation_sparsity=token_weighted_sparsity(pool, per_run),
        small_tier_share=small / served_all if served_all else 0.0,
        accepted_draft_tokens_per_step=accepted / steps if steps else 0.0,
        proposed_draft_tokens_per_step=proposed / steps if steps else None,
        provenance=f"measured: {served_all} requests served here{reps} ({first.name}); batches from their token times",
    )


def same_configuration(pool: tuple[LocalRun, ...]) -> tuple[LocalRun, ...]:
    """`pool`, checked to be repetitions of one configuration (a ValueError says what differs)."""
    if not pool:
        raise ValueError("work_profile needs at least one served run")
    for field in ("name", "max_batch", "bytes_per_weight", "small_tier"):
        seen = {getattr(r, field) for r in pool}
        if len(seen) > 1:
            raise ValueError(f"work_profile pools repetitions of one configuration; their {field} differ: {seen}")
    return pool


def token_weighted_sparsity(pool: Sequence[LocalRun], per_run: Sequence[Sequence[ServedRequest]]) -> float:
    """The repetitions' measured activation sparsity, each weighted by the tokens its served model computed
    (`per_run`: each repetition's `served_model_requests`; prompt tokens past the prefix cache and output
    tokens, small-tier requests left out)."""
    tokens = [
        sum(q.record.prompt_tokens - q.record.cached_prompt_tokens + q.record.output_tokens for q in served)
        for served in per_run
    ]
    total = sum(tokens)
    if total == 0:
        return pool[0].activation_sparsity
    return sum(r.activation_sparsity * t for r, t in zip(pool, tokens, strict=True)) / total


def served_model_requests(pool: Sequence[LocalRun]) -> list[tuple[ServedRequest, ...]]:
    """Per repetition, the requests the served model answered: with tiered routing, the large tier's (its
    engine's cache, batches and drafts are what the fleet's large pool is projected with; the small tier's
    share is carried separately), or every request if the router sent all of them, in every repetition, to
    the small tier."""
    large = [tuple(q for q in r.requests if r.small_tier is None or q.tier != r.small_tier) for r in pool]
    return large if any(large) else [r.requests for r in pool]


def work_profiles(local: LocalComparison | None) -> tuple[WorkProfile, WorkProfile]:
    """(baseline, optimized) work profiles for the fleet projection: each configuration's repetitions as
    served here, pooled (`work_profile`), or, with nothing served (`serve.enabled = false`), the
    no-optimization defaults with the baseline one request at a time."""
    if local is None:
        return WorkProfile(batch_limit=1), WorkProfile()
    baseline = local.baseline_runs or (local.baseline,)
    optimized = local.optimized_runs or (local.optimized,)
    return work_profile(baseline), work_profile(optimized)


def batches_in_flight(timelines: Sequence[Sequence[ServedRequest]]) -> tuple[float, int]:
    """(time-weighted mean, peak) decode batch over one or more timelines (repetitions, each on its own
    clock): each request decodes from its first token to its last (`arrival_s + ttft_s` to `arrival_s +
    e2e_s`, all measured), and the mean is the summed decode time over the time any request of its timeline
    was decoding (Little's law). Queueing before admission is not counted."""
    spans = [decode_spans(t) for t in timelines]
    busy_s = sum(b for _, b, _ in spans)
    mean = sum(d for d, _, _ in spans) / busy_s if busy_s > 0 else 1.0
    return mean, max([p for _, _, p in spans] + [1])


def decode_spans(requests: Sequence[ServedRequest]) -> tuple[float, float, int]:
    """(summed decode time of the requests, time any of them was decoding, most decoding at once), seconds
    from their measured token times, on one clock (see `batches_in_flight`)."""
    spans = [(r.arrival_s + r.record.ttft_s, r.arrival_s + r.record.e2e_s) for r in requests]
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])  # at equal times a finish first
    in_flight, peak, busy_s, last_t = 0, 0, 0.0, 0.0
    for t, change in events:
        if in_flight > 0:
            busy_s += t - last_t
        in_flight += change
        peak, last_t = max(peak, in_flight), t
    return sum(b - a for a, b in spans), busy_s, peak
