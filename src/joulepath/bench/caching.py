"""Prefix KV cache off vs on (issue 15): same requests, same run, interleaved (off, on, off, on, ...).

- TTFT of a ~1,000-token prompt whose prefix is cached vs cold (cache on, unused salt) vs cache off.
- Hit rate (prompt tokens served from the prefix cache / prompt tokens) on the main job's default workload
  (golden dev tasks as chat prompts, `execute.requests_for`) and on the golden lookup documents, against
  the offline optimum for the same cache size: Belady's rule over the same sequence of block hashes.
- Throughput and J/token of the main job's workload (the engine's records; energy with its provenance).
- Overhead when nothing is shared (random-token prompts), and greedy texts compared on vs off.
- Semantic answer cache: false-hit rate of the near-duplicate audit at the chosen threshold.

Every ratio is the median of the paired ratios (repetition i's on over its off) with its min-max spread.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from joulepath.bench.common import machine, write_result
from joulepath.engine import Engine, EngineConfig, SamplingParams
from joulepath.engine.prefix_cache import PrefixCache
from joulepath.meter import auto_meter
from joulepath.model import LoadedModel, load_model
from joulepath.quality import golden
from joulepath.quality.tasks import Example, chat_prompt
from joulepath.serving.frontend import Arrival, Frontend, Request

# Chosen on the seed-0 pairs by the 0.1 % false-hit budget (python -m joulepath.serving.near_duplicates).
SEMANTIC_THRESHOLD = 0.9988
SEMANTIC_RECORDED = 0.00093  # seed 0, 4,303 different-answer pairs, benchmarks/RESULTS.md (caching)


# ---- offline optimum ------------------------------------------------------------------------------


def block_hash_chain(ids: Sequence[int], block_size: int) -> list[int]:
    """Chained hashes of the blocks a prefix-cache lookup can hit: the first (len - 1) // block_size full
    blocks (the engine always computes at least the last token), chained as in `PrefixCache`."""
    parent, out = 0, []
    for i in range((len(ids) - 1) // block_size):
        parent = PrefixCache.chain(parent, tuple(ids[i * block_size : (i + 1) * block_size]))
        out.append(parent)
    return out


def belady_hit_blocks(requests: Sequence[Sequence[int]], capacity_blocks: int) -> int:
    """Blocks served from a cache of `capacity_blocks` under Belady's rule (Belady 1966): after each request,
    its missed blocks are inserted and, when full, the cached block whose next use lies farthest in the
    future is evicted (a block used later than all cached ones, or never, is not inserted). A request hits
    the longest run of its leading blocks that are cached (a block's KV needs its prefix's).

    >>> belady_hit_blocks([[1, 2], [1, 3], [1, 2]], capacity_blocks=2)  # 3 is never used again: bypassed
    3
    """
    uses: dict[int, list[int]] = defaultdict(list)  # block hash -> indices of the requests using it
    for i, req in enumerate(requests):
        for h in dict.fromkeys(req):
            uses[h].append(i)
    cursor: dict[int, int] = defaultdict(int)

    def next_use(h: int) -> float:
        u = uses[h]
        return u[cursor[h]] if cursor[h] < len(u) else float("inf")

    cache: set[int] = set()
    hits = 0
    for req in requests:
        for h in req:
            if h not in cache:
                break
            hits += 1
        for h in dict.fromkeys(req):
            cursor[h] += 1  # past this request
        for h in dict.fromkeys(req):
            if h in cache or capacity_blocks < 1:
                continue
            if len(cache) >= capacity_blocks:
                victim = max(cache, key=next_use)
                if next_use(victim) <= next_use(h):
                    continue  # every cached block is needed sooner than this one: bypass
                cache.remove(victim)
            cache.add(h)
    return hits


# ---- serving -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """One replay: the engine's records summed, and the texts by request id."""

    prompt_tokens: int
    cached_prompt_tokens: int
    output_tokens: int
    wall_s: float
    energy_j: float
    energy_provenance: str
    texts: dict[str, str]

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.wall_s

    @property
    def j_per_token(self) -> float:
        return self.energy_j / max(self.output_tokens, 1)


def replay(
    loaded: LoadedModel,
    prompts: Sequence[str | list[int]],
    arrivals_s: Sequence[float],
    config: EngineConfig,
    **sp: Any,
) -> Served:
    """Serve `prompts` through the serving frontend at their arrival times (greedy)."""
    frontend = Frontend(Engine(loaded, config, auto_meter()))
    params = SamplingParams(**sp)
    trace = [
        Arrival(t, Request(p if isinstance(p, str) else tuple(p), params, request_id=f"r{k}"))
        for k, (t, p) in enumerate(zip(arrivals_s, prompts, strict=True))
    ]
    result = frontend.replay(trace)
    recs = [r.record for r in result.responses if r.record is not None]
    return Served(
        sum(r.prompt_tokens for r in recs), sum(r.cached_prompt_tokens for r in recs),
        sum(r.output_tokens for r in recs), result.wall_s, result.energy_j, result.energy_provenance,
        {r.request_id: r.text for r in result.responses},
    )  # fmt: skip


def spread(values: Sequence[float]) -> dict[str, float | bool]:
    """Median and min-max; `includes_1` says the spread cannot tell the ratio from no change."""
    lo, hi = min(values), max(values)
    return {"median": statistics.median(values), "min": lo, "max": hi, "includes_1": lo <= 1.0 <= hi}


def interleaved(
    loaded: LoadedModel, prompts: Sequence[str | list[int]], arrivals_s: Sequence[float], config: EngineConfig,
    reps: int, **sp: Any,
) -> tuple[list[Served], list[Served]]:  # fmt: skip
    """(offs, ons): the same requests served with the cache off and on, `reps` times after a warm-up,
    interleaved; the order within a repetition alternates (off on, on off, ...) so drift favours neither."""
    warm = min(4, len(prompts))
    replay(loaded, prompts[:warm], [0.0] * warm, config, **sp)
    on_config = dataclasses.replace(config, prefix_cache=True)
    offs: list[Served] = []
    ons: list[Served] = []
    for rep in range(reps):
        for cached in (False, True) if rep % 2 == 0 else (True, False):
            (ons if cached else offs).append(replay(loaded, prompts, arrivals_s, on_config if cached else config, **sp))
    return offs, ons


def hit_rates(loaded: LoadedModel, prompts: Sequence[str], on: Served, config: EngineConfig) -> dict[str, Any]:
    """Measured hit rate of a replay against Belady's optimum for the engine's block pool, same sequence."""
    ids = [loaded.tokenizer.encode(p) for p in prompts]
    capacity = Engine(loaded, config).cache.n_blocks
    chains = [block_hash_chain(x, config.block_size) for x in ids]
    optimal = belady_hit_blocks(chains, capacity) * config.block_size / on.prompt_tokens
    measured = on.cached_prompt_tokens / on.prompt_tokens
    return {
        "hit_rate": measured,
        "hit_rate_optimal": optimal,
        "hit_rate_vs_optimal": measured / optimal if optimal else float("nan"),
        "capacity_blocks": capacity,
        "requests": len(prompts),
        "prompt_tokens": on.prompt_tokens,
    }


# ---- the measurements ----------------------------------------------------------------------------


def ttft_1k_prefix(loaded: LoadedModel, reps: int, prefix_tokens: int = 1000) -> dict[str, Any]:
    """TTFT of a (prefix + 2)-token prompt, interleaved per repetition: cold (cache on, a salt nobody used:
    no hit, pays hashing and insertion), cached (the same prefix served once before under the salt), off."""
    rng = random.Random(0)
    eos = set(loaded.config.eos_token_ids)
    vocab = [t for t in range(5, loaded.config.vocab_size) if t not in eos]
    prefix = [rng.choice(vocab) for _ in range(prefix_tokens)]
    on, off = Engine(loaded, EngineConfig(prefix_cache=True)), Engine(loaded, EngineConfig())

    def ttft_s(engine: Engine, ids: list[int], salt: str) -> float:
        rid = engine.add_request(ids, SamplingParams(max_tokens=1, ignore_eos=True), cache_salt=salt)
        engine.run_until_done()
        return engine.record(rid).ttft_s

    ttft_s(on, [*prefix, 10], "warm-up")  # burn-in: allocator, first-call costs
    ttft_s(off, [*prefix, 10], "")
    times: dict[str, list[float]] = {"cold": [], "cached": [], "off": []}
    for rep in range(reps):
        times["cold"].append(ttft_s(on, [*prefix, 11, 12], f"cold-{rep}"))
        ttft_s(on, [*prefix, 13], f"hot-{rep}")  # puts the prefix in the cache under this salt
        times["cached"].append(ttft_s(on, [*prefix, 11, 12], f"hot-{rep}"))
        times["off"].append(ttft_s(off, [*prefix, 11, 12], ""))
    return {
        "prompt_tokens": prefix_tokens + 2,
        "ttft_s": {k: spread(v) for k, v in times.items()},
        "speedup_cached_vs_cold": spread([c / h for c, h in zip(times["cold"], times["cached"], strict=True)]),
        "speedup_cached_vs_off": spread([o / h for o, h in zip(times["off"], times["cached"], strict=True)]),
        "cold_over_off": spread([c / o for c, o in zip(times["cold"], times["off"], strict=True)]),
    }


def main_job_prompts(n: int) -> tuple[list[float], list[Example]]:
    """The main job's default requests: the default scenario's trace and seed, `n` of them."""
    from joulepath.execute import requests_for
    from joulepath.run import build_trace
    from joulepath.scenario import Scenario

    scenario = Scenario()
    serve = scenario.serve.model_copy(update={"requests": n})
    arrivals, examples = requests_for(build_trace(scenario.workload), serve, scenario.workload.seed)
    return arrivals.tolist(), examples


def semantic_false_hit_rate(quick: bool, per_kind: int) -> dict[str, Any]:
    """False hits at SEMANTIC_THRESHOLD on pairs the threshold was not chosen on (seed 1); in --quick the
    recorded seed-0 figure."""
    if quick:
        return {"rate": SEMANTIC_RECORDED, "label": "recorded: seed 0, 4,303 pairs (benchmarks/RESULTS.md)"}
    from joulepath.serving.answer_cache import MiniLMEmbedder
    from joulepath.serving.near_duplicates import audit_pairs, near_duplicate_pairs

    report = audit_pairs(MiniLMEmbedder(), near_duplicate_pairs(per_kind, seed=1), threshold=SEMANTIC_THRESHOLD)
    a = report.audit
    return {
        "rate": a.false_hit_rate,
        "label": f"measured: seed 1, {a.different_pairs} different-answer pairs at threshold {SEMANTIC_THRESHOLD}",
    }


def run(model: str, quick: bool, reps: int, n_requests: int, per_kind: int) -> dict[str, Any]:
    loaded = load_model(model, device="cuda" if torch.cuda.is_available() else "cpu")
    n = 24 if quick else n_requests
    ttft = ttft_1k_prefix(loaded, reps)
    max_tokens = 40  # the main job's serve.max_tokens
    config = EngineConfig(max_batch=16)  # the main job's optimized batch

    arrivals, examples = main_job_prompts(n)
    prompts = [chat_prompt(e) for e in examples]
    offs, ons = interleaved(loaded, prompts, arrivals, config, reps, max_tokens=max_tokens, stop=("<|end|>",))
    main_hits = hit_rates(loaded, prompts, ons[0], config)

    lookups = golden.load("dev", skills=("lookup",))[: (12 if quick else 120)]
    lookup_prompts = [chat_prompt(e) for e in lookups]
    lookup_arrivals = arrivals[: len(lookups)] if len(arrivals) >= len(lookups) else [0.0] * len(lookups)
    _, lookup_on = interleaved(loaded, lookup_prompts, lookup_arrivals, config, 1, max_tokens=max_tokens)
    lookup_hits = hit_rates(loaded, lookup_prompts, lookup_on[0], config)

    rng = np.random.default_rng(0)
    lengths = [len(loaded.tokenizer.encode(p)) for p in prompts]
    random_prompts = [rng.integers(5, loaded.config.vocab_size, k).tolist() for k in lengths]
    r_offs, r_ons = interleaved(
        loaded, random_prompts, [0.0] * n, config, reps, max_tokens=max_tokens // 2, ignore_eos=True
    )
    no_reuse = [b.tokens_per_s / a.tokens_per_s for a, b in zip(r_offs, r_ons, strict=True)]
    greedy_diffs = sum(a.texts != b.texts for a in offs for b in ons) + sum(
        a.texts != b.texts for a in r_offs for b in r_ons
    )
    return {
        "model": model,
        "quick": quick,
        "repetitions": reps,
        "ttft_speedup_1k_prefix": ttft["speedup_cached_vs_cold"]["median"],
        "ttft": ttft,
        **{k: main_hits[k] for k in ("hit_rate", "hit_rate_optimal", "hit_rate_vs_optimal")},
        "hit_rates": {"main_job": main_hits, "golden_lookup_documents": lookup_hits},
        "throughput_gain": spread([b.tokens_per_s / a.tokens_per_s for a, b in zip(offs, ons, strict=True)]),
        "j_per_token": {
            "off": statistics.median(r.j_per_token for r in offs),
            "on": statistics.median(r.j_per_token for r in ons),
            "on_over_off": spread([b.j_per_token / a.j_per_token for a, b in zip(offs, ons, strict=True)]),
            "provenance": ons[0].energy_provenance,
        },
        "no_reuse_overhead": spread([1 - x for x in no_reuse]),  # 1 - throughput on / off
        "no_reuse_throughput_ratio": spread(no_reuse),
        "no_reuse_cached_prompt_tokens": sum(r.cached_prompt_tokens for r in r_ons),
        "greedy_identical": greedy_diffs == 0,
        "greedy_compared": f"{len(offs) * len(ons) + len(r_offs) * len(r_ons)} off/on replay pairs, {2 * n} requests",
        "semantic_false_hit_rate": semantic_false_hit_rate(quick, per_kind),
        "workload": f"main job default: {n} golden dev requests on the default trace; {len(lookups)} lookup tasks; "
        f"{n} random-token prompts of the same lengths",
        "machine": machine(),
    }


def _ratio(name: str, s: dict[str, Any], unit: str = "x") -> str:
    note = " (spread includes 1.0: no significant difference)" if s.get("includes_1") else ""
    return f"{name}: {s['median']:.3f}{unit} (min {s['min']:.3f}, max {s['max']:.3f}){note}"


def report(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"{r['model']} on {m['cpu']}, {m['threads']} torch threads, {r['repetitions']} interleaved repetitions")
    t = r["ttft"]["ttft_s"]
    print(f"TTFT {r['ttft']['prompt_tokens']}-token prompt: off {1e3 * t['off']['median']:.1f} ms | cold "
          f"{1e3 * t['cold']['median']:.1f} ms | cached {1e3 * t['cached']['median']:.2f} ms")  # fmt: skip
    print(_ratio("  TTFT cold / cached", r["ttft"]["speedup_cached_vs_cold"]))
    print(_ratio("  TTFT off / cached", r["ttft"]["speedup_cached_vs_off"]))
    print(_ratio("  TTFT cold / off", r["ttft"]["cold_over_off"]))
    for name, h in r["hit_rates"].items():
        print(
            f"hit rate {name}: {h['hit_rate']:.1%} vs Belady {h['hit_rate_optimal']:.1%}"
            f" = {h['hit_rate_vs_optimal']:.1%} of optimal ({h['requests']} requests, {h['capacity_blocks']} blocks)"
        )
    print(_ratio("throughput on / off (main job)", r["throughput_gain"]))
    j = r["j_per_token"]
    print(f"J/token off {j['off']:.4f} | on {j['on']:.4f} ({j['provenance']})")
    print(_ratio("  J/token on / off", j["on_over_off"]))
    print(_ratio("throughput on / off (no reuse)", r["no_reuse_throughput_ratio"]))
    print(f"greedy identical: {r['greedy_identical']} ({r['greedy_compared']})")
    s = r["semantic_false_hit_rate"]
    print(f"semantic false-hit rate: {s['rate']:.3%} ({s['label']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="jp-small, 24 requests, recorded semantic figure")
    parser.add_argument("--model", default=None, help="default jp-large (the main job's), jp-small with --quick")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--pairs-per-kind", type=int, default=100, help="semantic audit size (full run)")
    args = parser.parse_args(argv)
    model = args.model or ("jp-small" if args.quick else "jp-large")
    result = run(model, args.quick, args.reps, args.requests, args.pairs_per_kind)
    report(result)
    print(f"wrote {write_result('caching', result)}")
    return 0
