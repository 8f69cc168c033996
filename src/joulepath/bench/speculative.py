"""Speculative decoding off vs on (issue 14): the same requests, same run, interleaved per repetition
(plain, prompt lookup, draft model, MTP heads, in an order that rotates), at batch 1 and batch 8.

Workloads: golden lookup prompts (prompt-grounded: the answer is copied from the prompt), golden
arithmetic prompts, and free-form requests (random-token prompts, lengths from the default trace,
answers run to max_tokens) where nothing can be looked up and speculation should switch itself off.

Per configuration: decode tokens/s (output tokens after each request's first, over the time after its
first token; at batch 1 that is the batch-1 decode rate), end-to-end tokens/s, tokens per verify step
(1 + accepted drafts per decode step), drafts proposed/accepted, and whether every output equals the plain
run's. Every speedup is the median of paired ratios (repetition i's proposer over its plain run) with
its min-max spread; a spread that includes 1.0 says no significant difference.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from joulepath.bench.common import machine, write_result
from joulepath.engine import Engine, EngineConfig, SamplingParams
from joulepath.model import LoadedModel, load_model
from joulepath.model.mtp import load_heads
from joulepath.quality import golden
from joulepath.quality.tasks import chat_prompt

PROPOSER_NAMES = ("prompt_lookup", "draft", "mtp")


@dataclass(frozen=True)
class Decoded:
    """One configuration serving one workload once."""

    outputs: list[list[int]]
    output_tokens: int
    decode_tokens: int  # output tokens after each request's first
    decode_s: float  # batch 1: summed time after each first token; batched: first first-token -> last finish
    wall_s: float
    proposed: int
    accepted: int
    decode_steps: int  # decode steps (with drafts or without; counted only with speculation on)

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_tokens / self.decode_s if self.decode_s else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.wall_s if self.wall_s else 0.0


def serve(engine: Engine, prompts: list[list[int]], params: SamplingParams, batch: int) -> Decoded:
    """Serve all prompts: one at a time at batch 1, all queued at once otherwise. The engine lives on across
    calls, as a server's does: its speculator keeps what it measured (acceptance, step costs)."""
    t0 = time.perf_counter()
    if batch == 1:
        ids = []
        for p in prompts:
            ids.append(engine.add_request(p, params))
            engine.run_until_done()
    else:
        ids = [engine.add_request(p, params) for p in prompts]
        engine.run_until_done()
    wall = time.perf_counter() - t0
    recs = [engine.record(i) for i in ids]
    decode_tokens = sum(r.output_tokens - 1 for r in recs)
    decode_s = sum(r.e2e_s - r.ttft_s for r in recs) if batch == 1 else wall - min(r.ttft_s for r in recs)
    steps = sum(r.decode_steps for r in recs) if engine.speculator is not None else 0
    return Decoded(
        [engine.output_ids(i) for i in ids], sum(r.output_tokens for r in recs), decode_tokens, decode_s, wall,
        sum(r.draft_proposed for r in recs), sum(r.draft_accepted for r in recs), steps,
    )  # fmt: skip


def spread(values: list[float]) -> dict[str, float | bool]:
    lo, hi = min(values), max(values)
    return {"median": statistics.median(values), "min": lo, "max": hi, "includes_1": lo <= 1.0 <= hi}


def workloads(loaded: LoadedModel, n: int) -> dict[str, tuple[list[list[int]], SamplingParams]]:
    """Prompt token ids and sampling for each workload (greedy throughout)."""
    tok = loaded.tokenizer
    dev = golden.load("dev")
    lookup = [e for e in dev if e.skill == "lookup"][:n]
    arithmetic = [e for e in dev if e.skill in ("add", "mul")][:n]
    answer = SamplingParams(max_tokens=24)  # the zoo's <|end|> is its EOS id
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(np.log(120), 0.6, n), 16, 400).astype(int)  # Azure-like: long tail
    free = [rng.integers(5, loaded.config.vocab_size, k).tolist() for k in lengths]
    return {
        "lookup": ([tok.encode(chat_prompt(e)) for e in lookup], answer),
        "arithmetic": ([tok.encode(chat_prompt(e)) for e in arithmetic], answer),
        "free_form": (free, SamplingParams(max_tokens=32, ignore_eos=True)),
    }


def configs(draft: str | None, has_mtp: bool) -> dict[str, EngineConfig]:
    out = {"plain": EngineConfig(), "prompt_lookup": EngineConfig(speculative="prompt_lookup")}
    if draft:
        out["draft"] = EngineConfig(speculative="draft", draft_model=draft)
    if has_mtp:
        out["mtp"] = EngineConfig(speculative="mtp")
    return out


def run(model: str, draft: str | None, quick: bool, reps: int, batches: tuple[int, ...]) -> dict[str, Any]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = load_model(model, device=device)
    has_mtp = load_heads(Path(loaded.source)) is not None
    cfgs = configs(draft, has_mtp)
    n = 4 if quick else 24
    results: dict[str, Any] = {}
    identical = True
    for wname, (prompts, params) in workloads(loaded, n).items():
        for batch in batches:
            key = f"{wname}_b{batch}"
            engines = {name: Engine(loaded, dataclasses.replace(cfg, max_batch=batch)) for name, cfg in cfgs.items()}
            for engine in engines.values():  # warm-up: allocator, threads, first step-cost measurements
                serve(engine, prompts[:2], params, batch)
            runs: dict[str, list[Decoded]] = {name: [] for name in cfgs}
            names = list(cfgs)
            for rep in range(reps):
                order = names[rep % len(names) :] + names[: rep % len(names)]  # rotate: drift favours none
                for name in order:
                    runs[name].append(serve(engines[name], prompts, params, batch))
            plain = runs["plain"]
            entry: dict[str, Any] = {"requests": len(prompts), "plain_decode_tokens_per_s": _median(plain)}
            for name in names[1:]:
                rs = runs[name]
                same = all(r.outputs == plain[0].outputs for r in rs)
                identical &= same
                steps = sum(r.decode_steps for r in rs)
                entry[name] = {
                    "decode_tokens_per_s": _median(rs),
                    "speedup": spread(
                        [r.decode_tokens_per_s / p.decode_tokens_per_s for r, p in zip(rs, plain, strict=True)]
                    ),
                    "e2e_speedup": spread([r.tokens_per_s / p.tokens_per_s for r, p in zip(rs, plain, strict=True)]),
                    "proposed": sum(r.proposed for r in rs),
                    "accepted": sum(r.accepted for r in rs),
                    "acceptance_rate": sum(r.accepted for r in rs) / max(sum(r.proposed for r in rs), 1),
                    "tokens_per_decode_step": 1 + sum(r.accepted for r in rs) / steps if steps else None,
                    "identical_to_plain": same,
                }
            results[key] = entry
    speedups = [e[p]["speedup"]["median"] for e in results.values() for p in PROPOSER_NAMES if p in e]
    b1 = results.get("lookup_b1", {})

    def b1_speedup(p: str) -> float | None:
        return b1[p]["speedup"]["median"] if p in b1 else None

    return {
        "model": model,
        "draft_model": draft,
        "quick": quick,
        "repetitions": reps,
        "speedup_lookup_b1": b1_speedup("prompt_lookup"),
        "speedup_draft_b1": b1_speedup("draft"),
        "speedup_mtp_b1": b1_speedup("mtp"),
        "speedup_min_any_workload": min(speedups) if speedups else None,
        "mean_accepted_lookup": b1.get("prompt_lookup", {}).get("tokens_per_decode_step"),
        "mean_accepted_mtp": b1.get("mtp", {}).get("tokens_per_decode_step"),
        "greedy_identical": identical,
        "workloads": results,
        "k_choice": "adaptive: per sequence from measured acceptance and an online fit of step seconds vs tokens",
        "machine": machine(),
    }


def _median(runs: list[Decoded]) -> float:
    return statistics.median(r.decode_tokens_per_s for r in runs)


def report(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(
        f"{r['model']} (draft {r['draft_model']}) on {m['cpu']}, {m['threads']} torch threads, {r['repetitions']} reps"
    )
    for key, e in r["workloads"].items():
        print(f"{key}: plain {e['plain_decode_tokens_per_s']:.1f} decode tokens/s ({e['requests']} requests)")
        for p in PROPOSER_NAMES:
            if p not in e:
                continue
            x = e[p]
            s = x["speedup"]
            note = " (spread includes 1.0: no significant difference)" if s["includes_1"] else ""
            tpv = x["tokens_per_decode_step"]
            print(
                f"  {p:14s} {x['decode_tokens_per_s']:7.1f} tokens/s  speedup {s['median']:.2f}x "
                f"(min {s['min']:.2f}, max {s['max']:.2f}){note}; accepted {x['accepted']}/{x['proposed']}, "
                f"tokens/step {tpv if tpv is None else round(tpv, 2)}; identical {x['identical_to_plain']}"
            )
    print(
        f"greedy identical everywhere: {r['greedy_identical']}; slowest median speedup {r['speedup_min_any_workload']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="4 requests per workload, batch 1 only")
    parser.add_argument("--model", default="jp-large")
    parser.add_argument("--draft", default="jp-small", help="draft model ('' for none)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = (1,) if args.quick else (1, 8)
    result = run(args.model, args.draft or None, args.quick, args.reps, batches)
    report(result)
    print(f"wrote {write_result('speculative', result)}")
    return 0
