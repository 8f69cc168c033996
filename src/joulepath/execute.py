"""Real execution for the main job: the workload's first requests, served on this machine by the engine
with the scenario's model, once as a brute-force baseline (one request at a time) and once optimized
(continuous batching and, unless `serve.prefix_cache` is off, the prefix KV cache), then profiled.

Each request keeps the trace's arrival time (compressed to `serve.replay_s`); its content is a golden
dev-set task (the built-in models answer only those), so every served answer is also scored: the
accuracy of a configuration is measured on exactly the requests it served. Output lengths are the
model's own answers (up to `serve.max_tokens`), not the trace's.

On a shared machine one replay of each configuration is not enough: other load moves the numbers by
more than batching does. Each configuration is served `serve.repeats` times, interleaved (A B A B ...,
after an untimed warm-up), so both see the same conditions; every local ratio is the median of the
paired ratios (repetition i's optimized over its baseline) with its min-max spread, and a spread that
includes 1.0 is reported as no significant difference.

Greedy answers do not need repeating, only their timing does: by default (`serve.repeat_over = "slices"`)
repetition k serves its own slice of the requests (the same arrival times, other golden tasks), every
configuration the same slice in that repetition, so each ratio stays paired while accuracy is scored on
every slice: `repeats` times the answers for the time of one slice each. "same" serves every request in
every repetition instead.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from joulepath.engine import Engine, EngineConfig, SamplingParams
from joulepath.engine.context import check_output_fits, check_prompt_fits, context_tokens, model_label
from joulepath.engine.kv_cache import PagedKVCache
from joulepath.hw.kv_tiers import modelled_tier
from joulepath.meter import auto_meter
from joulepath.model import LoadedModel, load_model
from joulepath.optimize.sparsity import measured_sparsity, reset_counters, sparse_modules
from joulepath.profile import profile_engine
from joulepath.quality import golden
from joulepath.quality.tasks import SYSTEM_PROMPT, Example, chat_prompt, check
from joulepath.results import (
    KVOffloadUse,
    KVTierUse,
    LeverGate,
    LocalComparison,
    LocalRun,
    LocalStep,
    ModelledTierEffect,
    ServedRequest,
    TierPolicy,
    accuracy_of,
    median_run,
)
from joulepath.scenario import GuardSection, ServeSection
from joulepath.serving.frontend import Arrival, Frontend, Request, Tiers
from joulepath.serving.guard import Guard, GuardPolicy
from joulepath.serving.router import Router, shipped_router
from joulepath.workload import Trace


def requests_for(trace: Trace, serve: ServeSection, seed: int) -> tuple[np.ndarray, list[Example]]:
    """One repetition's arrival times (the trace's first `serve.per_repetition`, seconds from 0, compressed to
    `replay_s`) and every distinct request's golden task: with `repeat_over = "slices"` one slice per
    repetition (`repetition_slice`), each served at those arrival times; with "same", one task per arrival."""
    per = min(serve.per_repetition, len(trace))
    arrivals = trace.arrival_s[:per] - trace.arrival_s[0]
    span = float(arrivals[-1]) if per > 1 else 0.0
    if span > 0:
        arrivals = arrivals * (serve.replay_s / span)
    count = serve.repeats if serve.repeat_over == "slices" else 1
    pool = golden.load("dev", per_cell=golden.SERVED_PER_CELL)  # the router was fitted on the rest
    return arrivals, stratified_slices(pool, per, count, seed)


def stratified_slices(pool: list[Example], per: int, count: int, seed: int) -> list[Example]:
    """`count` slices of `per` golden tasks, each with the pool's (skill, level) cells as evenly as `per` allows
    (every cell per // cells times; the remainder one more in cells a seeded draw picks per slice), in a
    seeded order within the slice. A cell's tasks are drawn without replacement until it runs out, then again.
    Slices alike in their mix keep a lever's paired step from moving with what one slice happened to hold (a
    golden lookup prompt is ~20x a sum's length)."""
    rng = random.Random(seed)
    cells: dict[tuple[str, str], list[Example]] = {}
    for e in pool:
        cells.setdefault((e.skill, e.level), []).append(e)
    keys = sorted(cells)
    draws: dict[tuple[str, str], Iterator[Example]] = {}
    for key in keys:
        rng.shuffle(cells[key])
        draws[key] = itertools.cycle(cells[key])
    q, r = divmod(per, len(keys))
    out: list[Example] = []
    for _ in range(count):
        extra = set(rng.sample(keys, r))
        part = [next(draws[key]) for key in keys for _ in range(q + (key in extra))]
        rng.shuffle(part)
        out += part
    return out


def repetition_slice(examples: list[Example], per: int, k: int) -> tuple[list[Example], int]:
    """Repetition `k`'s requests and the index of its first: the k-th slice of `per` where `examples` holds
    a slice per repetition, else (one arrival per example) all of them, every time."""
    start = (k * per) % len(examples)
    return examples[start : start + per], start


def slices(examples: list[Example], per: int) -> list[tuple[list[Example], int]]:
    """Every distinct slice of `per` requests (one: all of them) with the index of its first."""
    return [repetition_slice(examples, per, k) for k in range(len(examples) // per)]


def replay(
    loaded: LoadedModel,
    name: str,
    max_batch: int,
    arrivals: np.ndarray,
    examples: list[Example],
    max_tokens: int,
    guard: Guard | None = None,
    config: EngineConfig | None = None,
    modelled_tier: str | None = None,
    routing: Routing | None = None,
    first_id: int = 0,
) -> LocalRun:
    """Serve the requests as they arrive, through the serving frontend (input guard, engine, text, output
    guard); the meter covers the whole replay, idle gaps included. `config` (default: the engine's) gets
    `max_batch`. With `routing`, the router sends each request to its small tier (the same engine settings
    without speculation or the int8 KV cache) or to `loaded`. Request k is named r{first_id + k}."""
    config = dataclasses.replace(config or EngineConfig(), max_batch=max_batch)
    engine = Engine(loaded, config, auto_meter())
    small = None
    if routing is None:
        frontend = Frontend(engine, guard)
    else:
        # the small tier as loaded: the weight and KV levers passed their gates on `loaded`, not on it
        small_config = dataclasses.replace(config, speculative=None, draft_model=None, kv_int8=False)
        small = Engine(routing.small, small_config, auto_meter())
        tiers = Tiers(routing.router.tiers[0], ((routing.router.tiers[1], engine),), routing.router)
        frontend = Frontend(small, guard, tiers=tiers)
    params = SamplingParams(max_tokens=max_tokens, stop=("<|end|>",))
    trace = [
        Arrival(
            float(arrivals[k]), Request(chat_prompt(ex), params, request_id=f"r{first_id + k}", user_text=ex.user_text)
        )
        for k, ex in enumerate(examples)
    ]
    result = frontend.replay(trace)
    by_id = {r.request_id: r for r in result.responses}
    served, blocked = [], []
    for k, ex in enumerate(examples):
        resp = by_id[f"r{first_id + k}"]
        if resp.record is None:
            blocked.append(resp.request_id)
            continue
        action = resp.output_guard.action if resp.output_guard else "allow"
        tier, route = (resp.tier, resp.route) if routing else ("", "")
        served.append(
            ServedRequest(
                resp.record, float(arrivals[k]), ex.skill, ex.level, check(ex, resp.text), action, tier, route
            )
        )
    accuracy = sum(s.correct for s in served) / max(len(served), 1)
    kv = kv_use(engine, modelled_tier)
    for e in (engine, small):
        if e is not None:
            e.close()
    return LocalRun(
        name, max_batch, tuple(served), result.wall_s, result.energy_j, result.energy_provenance, accuracy,
        tuple(blocked), result.guard_s, kv, small_tier=routing.router.tiers[0] if routing else None,
    )  # fmt: skip


def kv_use(engine: Engine, modelled_tier: str | None) -> KVOffloadUse | None:
    """What the engine's prefix-cache pool and offload tiers did (None: no prefix cache)."""
    prefix, off = engine.prefix_cache, engine.offload
    if prefix is None:
        return None
    tiers = tuple(
        KVTierUse(t.kind, t.capacity_blocks, t.stored, t.restored, t.restore_s_per_block)
        for t in (off.stats() if off else [])
    )
    return KVOffloadUse(
        block_bytes=PagedKVCache.bytes_per_block_of(engine.cache),
        block_tokens=engine.cache.block_size,
        pool_blocks=engine.cache.n_blocks,
        evicted_blocks=prefix.evicted_blocks,
        declined_blocks=prefix.declined_blocks,
        prefill_s_per_token=off.prefill_s_per_token if off else None,
        tiers=tiers,
        modelled=modelled_effect(engine, modelled_tier) if modelled_tier else None,
    )


def modelled_effect(engine: Engine, name: str) -> ModelledTierEffect | None:
    """Copying the blocks a modelled tier would have served back (estimated from the catalog) against
    recomputing their prefill at the cost per token measured here."""
    off = engine.offload
    if off is None or not off.modelled.capacity_blocks:
        return None
    tier = modelled_tier(name)
    moved = off.modelled.hit_blocks * PagedKVCache.bytes_per_block_of(engine.cache)
    tokens = off.modelled.hit_blocks * engine.cache.block_size
    per_token = off.prefill_s_per_token
    return ModelledTierEffect(
        name, off.modelled.capacity_blocks, off.modelled.hit_blocks, tokens, tier.seconds(moved),
        tier.joules(moved), per_token * tokens if per_token is not None else None, tier.provenance,
    )  # fmt: skip


MIB = 2**20


def engine_config(serve: ServeSection, optimized: bool) -> EngineConfig:
    """The baseline's engine (no prefix cache, no tiers) or the optimized one as the scenario sets it."""
    if not optimized:
        return EngineConfig(attention=serve.attention)
    spec = {} if serve.speculative == "off" else {"speculative": serve.speculative, "draft_model": serve.draft_model}
    if not serve.prefix_cache:
        return EngineConfig(attention=serve.attention, **spec)  # type: ignore[arg-type]
    modelled = 0 if serve.kv_modelled_tier == "none" else int(serve.kv_modelled_tier_gib * 2**30)
    return EngineConfig(
        prefix_cache=True,
        offload_host_bytes=serve.kv_offload_host_mib * MIB,
        offload_disk_bytes=serve.kv_offload_disk_mib * MIB,
        offload_modelled_bytes=modelled,
        attention=serve.attention,
        **spec,  # type: ignore[arg-type]
    )


def guard_for(section: GuardSection) -> Guard | None:
    if not section.enabled:
        return None
    fields = {k: v for k, v in section.model_dump().items() if k != "enabled"}
    return Guard(GuardPolicy(**fields, system_prompt=SYSTEM_PROMPT))


WARM_UP_REQUESTS = 8  # served once, untimed, before the first repetition: allocator, threads, caches


@dataclass(frozen=True)
class Weights:
    """The optimized configuration's model: the loaded one, or a copy with the lever that passed its gate."""

    loaded: LoadedModel
    lever: str | None = None
    bytes_per_weight: float | None = None
    gates: tuple[LeverGate, ...] = ()  # every verdict reached, passed or refused
    kv_int8: bool = False  # the int8 KV cache passed its gate


# fastest first on CPUs measured here. int8_vnni (joulepath's own int8 kernel: the AVX512-VNNI build, or the AVX2
# one on CPUs without VNNI; skipped with its reason where the CPU or a C compiler is missing) against int8_dynamic,
# serving jp-large's golden requests (max_batch 16, 40 tokens; 2026-11-27, 3 paired reps each): on AVX512-VNNI at
# 2 threads 1.03x (1.03-1.04) in one run and 1.00x (0.99-1.01) in wall and CPU time in the next, i.e. equal; at
# 1 thread 1.18x (1.17-1.20); on Qwen2.5-0.5B's shapes at 1 thread 1.47x (benchmarks/quant_kernels.py). The AVX2
# build (AMD Zen 3) was 0.78x (0.77-0.80) int8_dynamic at 2 threads while it ran on one core; split over both
# (OpenMP, 17:50 UTC, the main job's 3 slices of 48) it spends 0.954x (0.86-0.96) int8_dynamic's joules per
# token, i.e. 1.05x the tokens per joule, and 1.02x (0.91-1.04) at 1 thread. Past 2 torch threads the threaded
# kernels are unmeasured: fbgemm's int8_dynamic, measured there, goes first.
AUTO_LEVERS = ("int8_vnni", "int8_dynamic", "int4_weight_only", "int8_weight_only")
UNMEASURED_PAST_2_THREADS = ("int8_vnni",)


def auto_levers(threads: int) -> tuple[str, ...]:
    """`AUTO_LEVERS` for `threads` torch threads: joulepath's kernels go after the others past 2 threads.

    >>> auto_levers(2)[:2], auto_levers(8)[:2]
    (('int8_vnni', 'int8_dynamic'), ('int8_dynamic', 'int4_weight_only'))
    """
    if threads <= 2:
        return AUTO_LEVERS
    return tuple(n for n in AUTO_LEVERS if n not in UNMEASURED_PAST_2_THREADS) + UNMEASURED_PAST_2_THREADS


def optimized_weights(
    loaded: LoadedModel, serve: ServeSection, progress: Callable[[str], None] = lambda _: None
) -> Weights:
    """Gate each candidate weight lever on the served model (cached verdicts reused) and apply the first
    that passes to a fresh copy; with none passing, the optimized configuration serves the model as loaded."""
    if serve.quantize == "off" and not serve.sparsity and not serve.kv_int8:
        return Weights(loaded)
    from joulepath.optimize import available_modes
    from joulepath.optimize.levers import GATE_MAX_TOKENS, apply_lever, choose_lever, gate_examples, parse_lever

    usable = available_modes()
    auto = auto_levers(torch.get_num_threads())
    candidates = list(auto if serve.quantize == "auto" else () if serve.quantize == "off" else (serve.quantize,))
    if serve.sparsity:
        candidates.append(f"teal:{serve.sparsity:g}")
    if serve.kv_int8:
        candidates.insert(0, "kv_int8")  # an engine setting, gated on its own, kept beside a weight lever
    chosen: str | None = None
    kv_int8 = False
    context = context_tokens(loaded.config)
    examples = [  # a gate example that cannot fit the context would only test the context check
        e
        for e in gate_examples(serve.gate_per_cell)
        if len(loaded.tokenizer.encode(chat_prompt(e))) + GATE_MAX_TOKENS <= context
    ]
    if not examples:
        progress(f"quality gate: no golden test example fits {serve.model}'s context; weights served as loaded")
        return Weights(loaded)
    gates: list[LeverGate] = []
    for name in candidates:
        if chosen is not None:
            break  # one weight lever: the first that passed (kv_int8, an engine setting, is gated first)
        if usable.get(name) is not None:
            progress(f"quality gate: {name} not available here ({usable[name]})")
            continue
        progress(f"quality gate: {name} on {serve.model} ({len(examples)} golden test examples; cached after)")
        try:
            verdicts = choose_lever(serve.model, name, examples)
        except ValueError as exc:  # the lever cannot apply to this model's shapes (e.g. int4 groups)
            progress(f"quality gate: {name} does not apply to {serve.model}: {exc}")
            continue
        gates += verdicts
        if verdicts[-1].passed and name == "kv_int8":
            kv_int8 = True
        elif verdicts[-1].passed:
            chosen = verdicts[-1].lever
    if chosen is None:
        return Weights(loaded, None, None, tuple(gates), kv_int8)
    copy = load_model(serve.model, device=next(loaded.model.parameters()).device)
    bytes_per_weight = apply_lever(copy, parse_lever(chosen))
    return Weights(copy, chosen, bytes_per_weight, tuple(gates), kv_int8)


def optimized_config(serve: ServeSection, weights: Weights) -> EngineConfig:
    """The optimized engine; with the int8 KV cache (gate passed) the offload tiers, which hold
    full-precision blocks, are off."""
    config = engine_config(serve, True)
    if not weights.kv_int8:
        return config
    return dataclasses.replace(config, kv_int8=True, offload_host_bytes=0, offload_disk_bytes=0)


@dataclass(frozen=True)
class Routing:
    """Tiered routing: the small tier's model and the router that sends requests to it or to the served model."""

    small: LoadedModel
    router: Router
    cascade_cut: float | None = None  # the cascade's confidence bar tuned with the router (for the comparison)


def optimized_routing(serve: ServeSection, progress: Callable[[str], None] = lambda _: None) -> Routing | None:
    """The router shipped for (`serve.small_tier`, `serve.model`), if routing is on and the router was fitted on
    these weights and passed its gate (serving/router.shipped_router); else None, with the reason said."""
    if serve.routing == "off":
        return None
    if serve.small_tier == serve.model:
        progress(f"tiered routing off: serve.small_tier is serve.model ({serve.model}); nothing to route between")
        return None
    router, provenance, why = shipped_router(serve.small_tier, serve.model, golden.SERVED_PER_CELL)
    if router is None:
        progress(f"tiered routing off: {why}")
        return None
    cut = provenance.get("cascade_min_mean_logprob")
    return Routing(load_model(serve.small_tier), router, float(cut) if isinstance(cut, int | float) else None)


def serves_alike(before: Rung, routed: Rung) -> bool:
    """Whether `before` serves every request as `routed` serves its large-tier ones: the same model object,
    batch and engine settings (routing aside, which only picks the requests that reach the large tier)."""
    return before.model is routed.model and before.max_batch == routed.max_batch and before.config == routed.config


def always_large(
    before: tuple[Rung, LocalStep], routed: tuple[Rung, LocalStep], serve: ServeSection, arrivals: np.ndarray,
    examples: list[Example], guard: Guard | None, progress: Callable[[str], None],
) -> tuple[tuple[ServedRequest, ...], str]:  # fmt: skip
    """The always-large policy's answers and how they were measured: the rung before routing's (every request
    it served over its repetitions) where it serves as the routed rung's large tier does, at the same threads
    (the ablation ladder); else (without `serve.ablation` that rung is brute force) the large tier serving
    every slice once more with the routed rung's settings."""
    (rung, step), (routed_rung, routed_step) = before, routed
    if serves_alike(rung, routed_rung) and step.runs[0].torch_threads == routed_step.runs[0].torch_threads:
        return step.answers, f"{AS_SERVED}, the rung before routing"
    progress(f"tiered routing: {serve.model} on every request once more (always-large, the routed rung's settings)")
    served = replay_slices(
        routed_rung.model, "always-large", routed_rung.max_batch, arrivals, examples, serve.max_tokens, guard,
        routed_rung.config,
    )  # fmt: skip
    return served, "served once more on the large tier with the routed rung's settings"


def replay_slices(
    loaded: LoadedModel, name: str, max_batch: int, arrivals: np.ndarray, examples: list[Example], max_tokens: int,
    guard: Guard | None, config: EngineConfig,
) -> tuple[ServedRequest, ...]:  # fmt: skip
    """Every slice of `examples` served once at `arrivals` (`replay`, request ids as in the repetitions)."""
    served: list[ServedRequest] = []
    for part, start in slices(examples, len(arrivals)):
        run = replay(loaded, name, max_batch, arrivals, part, max_tokens, guard, config, first_id=start)
        served += run.requests
    return tuple(served)


AS_SERVED = "as served (each request's answer over the repetitions)"


def tier_policies(
    steps: list[LocalStep], rungs: list[Rung], serve: ServeSection, arrivals: np.ndarray, examples: list[Example],
    guard: Guard | None, progress: Callable[[str], None] = lambda _: None,
) -> tuple[TierPolicy, ...]:  # fmt: skip
    """Always-large, always-small, the router, the cascade and the oracle on the same served requests (every
    distinct request the repetitions served): the router is the routing rung as served; always-large is the
    rung before it where that serves the large tier alike, else the large tier once more (`always_large`);
    always-small is the small tier serving every request once more (same engine settings, log-probabilities
    kept); both replays run at the routed rung's threads. The cascade and the oracle are composed from those
    answers, per request, with their joules."""
    i = next(k for k, rung in enumerate(rungs) if rung.routing is not None)
    routing = rungs[i].routing
    assert routing is not None
    routed = steps[i].answers
    with torch_threads(median_run(list(steps[i].runs)).torch_threads):  # 0 (not recorded): as set
        large_served, large_how = always_large(
            (rungs[i - 1], steps[i - 1]), (rungs[i], steps[i]), serve, arrivals, examples, guard, progress
        )
        progress(f"tiered routing: {routing.router.tiers[0]} on every request once more (always-small, the cascade)")
        config = dataclasses.replace(
            engine_config(serve, True), speculative=None, draft_model=None, track_logprobs=True
        )
        small_served = replay_slices(
            routing.small, "always-small", serve.max_batch, arrivals, examples, serve.max_tokens, guard, config
        )
    large = {r.record.request_id: r for r in large_served}
    small = {r.record.request_id: r for r in small_served}
    ids = [rid for rid in large if rid in small]

    def policy(name: str, on_small: Callable[[str], bool], escalate: Callable[[str], bool], how: str) -> TierPolicy:
        answered = [on_small(rid) and not escalate(rid) for rid in ids]
        correct = sum(small[rid].correct if a else large[rid].correct for rid, a in zip(ids, answered, strict=True))
        spent = [(small[rid].record.energy_j if on_small(rid) else 0.0) + (0.0 if a else large[rid].record.energy_j)
                 for rid, a in zip(ids, answered, strict=True)]  # fmt: skip
        energy = sum(spent)
        n = max(len(ids), 1)
        return TierPolicy(name, correct / n, sum(answered) / n, correct, energy, how)

    def unsure(rid: str) -> bool:
        rec = small[rid].record
        return routing.cascade_cut is not None and rec.logprob_sum / max(rec.output_tokens, 1) < routing.cascade_cut

    rows = [
        policy("always-large", lambda _: False, lambda _: False, large_how),
        policy("always-small", lambda _: True, lambda _: False, "served once more on the small tier"),
        TierPolicy(
            "router",
            accuracy_of(routed),
            sum(r.tier == routing.router.tiers[0] for r in routed) / max(len(routed), 1),
            sum(r.correct for r in routed),
            sum(r.record.energy_j for r in routed),
            AS_SERVED,
        ),
    ]
    if routing.cascade_cut is not None:
        kept = f"composed: the small answer kept above mean log-prob {routing.cascade_cut:.3f}"
        rows.append(policy("cascade", lambda _: True, unsure, kept))
    oracle = "composed: the small tier where it is right or the large tier is wrong (the bound)"
    rows.append(policy("oracle", lambda rid: small[rid].correct or not large[rid].correct, lambda _: False, oracle))
    return tuple(rows)


def tuned_threads(spec: str) -> int | None:
    """The thread count `joulepath tune` found fastest (and usable) for this model on this machine, if it ran."""
    from joulepath.optimize.tune import load_cached

    tuned = load_cached(spec)
    return tuned.best.candidate.threads if tuned is not None and tuned.measured else None


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block at `n` torch threads (None: as set), then restore the count."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Rung:
    """One configuration of the ablation ladder: brute force plus every lever up to `lever`."""

    lever: str
    how: str  # the whole configuration, in words
    max_batch: int
    config: EngineConfig
    model: LoadedModel
    routing: Routing | None = None


def ladder(loaded: LoadedModel, serve: ServeSection, weights: Weights, routing: Routing | None = None) -> list[Rung]:
    """Brute force (one request at a time, the model as loaded, no caches, no speculation), then, with
    `serve.ablation`, one lever more per rung in a fixed order: continuous batching, prefix cache (with
    its offload tiers), the weight/KV lever that passed its gate, tiered routing, speculative decoding. The
    last rung is always the optimized configuration; without `serve.ablation` it follows brute force directly."""
    full = optimized_config(serve, weights)
    no_spec = dataclasses.replace(full, speculative=None, draft_model=None)
    kv = ["int8 KV" + (" (offload tiers off)" if serve.prefix_cache else "")] if weights.kv_int8 else []
    lever_name = " + ".join(([weights.lever] if weights.lever else []) + kv)
    steps: list[tuple[str, EngineConfig, LoadedModel, Routing | None]] = [
        ("continuous batching", engine_config(serve, False), loaded, None)
    ]
    if serve.prefix_cache:  # with its offload tiers, which the int8 KV rung (if any) then turns off
        cached = dataclasses.replace(engine_config(serve, True), speculative=None, draft_model=None)
        steps.append(("prefix cache", cached, loaded, None))
    if lever_name:
        steps.append((lever_name, no_spec, weights.loaded, None))
    if routing is not None:
        steps.append((f"tiered routing ({' / '.join(routing.router.tiers)})", no_spec, weights.loaded, routing))
    if serve.speculative != "off":
        steps.append((f"speculative ({serve.speculative})", full, weights.loaded, routing))
    rungs = [Rung("brute force", "one at a time", 1, engine_config(serve, False), loaded)]
    how = ""
    for lever, config, model, routed in steps:
        how = f"{how} + {lever}" if how else lever
        rungs.append(Rung(lever, how, serve.max_batch, config, model, routed))
    if not serve.ablation:
        rungs = [rungs[0], dataclasses.replace(rungs[-1], lever="every lever")]
    return rungs


def serve_interleaved(
    loaded: LoadedModel,
    arrivals: np.ndarray,
    examples: list[Example],
    serve: ServeSection,
    guard: Guard | None,
    progress: Callable[[str], None] = lambda _: None,
    weights: Weights | None = None,
    routing: Routing | None = None,
) -> list[LocalStep]:
    """Serve every rung of the ladder `serve.repeats` times, interleaved (A B C A B C ...), after an
    untimed warm-up; returns the rungs with their repetitions in the order served. Repetition k serves
    `repetition_slice(examples, len(arrivals), k)` at `arrivals`: its own slice, or all the requests. The
    first rung's runs are named "baseline", the last's "optimized" (it serves `weights`, default the loaded
    model). Every rung after brute force runs at the thread count `joulepath tune` found (if it ran), so
    no lever's step includes a change of threads."""
    if len(examples) not in (len(arrivals), len(arrivals) * serve.repeats):
        raise ValueError(
            f"{len(examples)} requests for {len(arrivals)} arrivals: give one per arrival (every repetition serves "
            f"all) or one per arrival per repetition ({len(arrivals) * serve.repeats}, a slice each)"
        )
    weights = weights or Weights(loaded)
    rungs = ladder(loaded, serve, weights, routing)
    names = ["baseline", *(r.lever for r in rungs[1:-1]), "optimized"]
    modelled = None if serve.kv_modelled_tier == "none" else serve.kv_modelled_tier
    runs: list[list[LocalRun]] = [[] for _ in rungs]
    threads = tuned_threads(serve.model)
    if threads:
        progress(f"optimized configuration at {threads} torch thread(s), as `joulepath tune` measured fastest here")
    # Every rung once, untimed, as it will be served: a rung's first replay pays one-off costs (the router's
    # first features, a tier's first allocations: +1.5 s of 2 s for the routed rung on jp-large, 2026-11-27),
    # which would otherwise land in the first repetition only.
    warm = min(WARM_UP_REQUESTS, len(examples))
    for i, rung in enumerate(rungs):
        with torch_threads(threads if i > 0 else None):
            replay(
                rung.model, "warm-up", rung.max_batch, np.zeros(warm), examples[:warm], serve.max_tokens, guard,
                rung.config, modelled if rung.config.prefix_cache else None, rung.routing,
            )  # fmt: skip
    for k in range(serve.repeats):
        part, start = repetition_slice(examples, len(arrivals), k)
        which = f" (requests {start + 1}-{start + len(part)} of {len(examples)})" if len(part) < len(examples) else ""
        for i, (name, rung) in enumerate(zip(names, rungs, strict=True)):
            progress(
                f"serving {len(part)} requests{which} on {serve.model}: {name} ({rung.how}), {k + 1} of {serve.repeats}"
            )
            lever_model = rung.model is weights.loaded and weights.lever is not None
            if lever_model:
                reset_counters(rung.model.model)
            with torch_threads(threads if i > 0 else None):  # tuned threads on every rung but brute force
                run = replay(
                    rung.model, name, rung.max_batch, arrivals, part, serve.max_tokens, guard, rung.config,
                    modelled if rung.config.prefix_cache else None, rung.routing, start,
                )  # fmt: skip
                run = dataclasses.replace(run, torch_threads=torch.get_num_threads())
            if lever_model:
                run = dataclasses.replace(
                    run,
                    lever=weights.lever,
                    bytes_per_weight=weights.bytes_per_weight,
                    activation_sparsity=measured_sparsity(rung.model.model)
                    if sparse_modules(rung.model.model)
                    else 0.0,
                )
            runs[i].append(run)
    return [LocalStep(r.lever, r.how, tuple(rs)) for r, rs in zip(rungs, runs, strict=True)]


def check_context(loaded: LoadedModel, examples: list[Example], max_tokens: int) -> None:
    """Refuse, before anything is served, a request that does not fit the model's context: a prompt with
    no room for an answer, or `serve.max_tokens` running past the context after the longest prompt (the
    engine would cap it per request; a scenario's setting is refused instead, so no answer is cut short)."""
    context, name = context_tokens(loaded.config), model_label(loaded.source)
    lengths = [len(loaded.tokenizer.encode(chat_prompt(e))) for e in examples]
    for k, n in enumerate(lengths):
        task = f"{examples[k].skill}/{examples[k].level}"
        check_prompt_fits(n, context, name, f"served request r{k} (golden task {task})")
    check_output_fits(max(lengths, default=0), max_tokens, context, name, "serve.max_tokens")


def serve_locally(
    trace: Trace,
    serve: ServeSection,
    seed: int,
    progress: Callable[[str], None] = lambda _: None,
    guard_section: GuardSection | None = None,
) -> LocalComparison:
    loaded = load_model(serve.model)
    arrivals, examples = requests_for(trace, serve, seed)
    check_context(loaded, examples, serve.max_tokens)
    guard = guard_for(guard_section) if guard_section else None
    weights = optimized_weights(loaded, serve, progress)
    routing = optimized_routing(serve, progress)
    steps = serve_interleaved(loaded, arrivals, examples, serve, guard, progress, weights, routing)
    rungs = ladder(loaded, serve, weights, routing)  # the rungs serve_interleaved served (ladder is pure)
    policies = tier_policies(steps, rungs, serve, arrivals, examples, guard, progress) if routing else ()
    baselines, optimizeds = list(steps[0].runs), list(steps[-1].runs)
    prof = brute = None
    if serve.profile:  # both ends of the ladder, so the report can say what the levers changed and what is left
        prompts = [chat_prompt(e) for e in examples[: serve.profile_requests]]
        progress(f"hot-path profile: brute force ({len(prompts)} requests, one at a time)")
        one = dataclasses.replace(engine_config(serve, False), max_batch=1)
        brute = profile_engine(loaded, prompts, config=one)
        progress(f"hot-path profile: optimized ({len(prompts)} requests)")
        with torch_threads(tuned_threads(serve.model)):
            full = dataclasses.replace(optimized_config(serve, weights), max_batch=serve.max_batch)
            prof = profile_engine(weights.loaded, prompts, config=full, weight_lever=weights.lever)
    device = str(next(loaded.model.parameters()).device)
    baseline, optimized = median_run(baselines), median_run(optimizeds)
    return LocalComparison(
        serve.model, device, baseline, optimized, prof, tuple(baselines), tuple(optimizeds), weights.gates,
        tuple(steps), brute, policies,
    )  # fmt: skip
