"""Speculative decoding off vs on (issue 14): the same requests, same run, interleaved per repetition
(plain, prompt lookup, draft model, MTP heads, in an order that rotates), at batch 1 and batch 8.

Weights: `--lever` (default int8_vnni where this CPU has it, the weight lever the main job serves; on a CUDA
GPU none: target and draft in bf16, results in `speculative_cuda.json`) is applied
to the target and the draft alike, and every speedup is against plain decoding on the *same* weights: the
gain speculation adds. At batch 1 the fp32 model's plain decoding runs in the same rotation as a reference,
so the combined gain (lever + speculation vs fp32 plain) is measured too. int8_vnni's GEMMs are
batch-invariant (a row's int8 codes and sums do not depend on the rows beside it), so a (k+1)-token verify
computes each token's projections exactly as a 1-token decode step does. Every configuration runs on the
same attention kernel (`same_attention`): on a CPU the row-invariant one (engine/row_attention.py), with
which the whole forward is row-invariant and greedy speculation token-identical by construction; torch's
CPU SDPA gives results ~1e-7 apart for the same row when the call's batch or padded key length differs,
which int8's per-token rounding can carry to a near-tie argmax (`--attention sdpa` shows it).
"identical" is therefore measured, request by request, and reported where it fails.

Workloads: golden lookup prompts (prompt-grounded: the answer is copied from the prompt), golden
arithmetic prompts, and free-form requests (random-token prompts, lengths from the default trace,
answers run to max_tokens) where nothing can be looked up and speculation should switch itself off.

Each repetition serves a workload's requests as many times as makes plain decoding take about a second
(`passes_for`: short answers give too few decode tokens to time otherwise). Per configuration: decode tokens/s
(output tokens after each request's first, over the time after its first token; at batch 1 that is the batch-1
decode rate), end-to-end tokens/s, tokens per verify step (1 + accepted drafts per decode step), drafts
proposed/accepted, and whether every output equals the plain run's. Every speedup is the median of paired
ratios (repetition i's proposer over its plain run) with its min-max spread; a spread that includes 1.0 says
no significant difference.

Noise floor: a second plain engine (`plain (A/A)`, no speculation at all) runs in the same rotation, and its
paired ratios to the first are reported per cell and over the run. A configuration cannot be told apart from
plain decoding by less than that: on this shared 2-core VM the A/A ratios alone span about +-5 %."""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from joulepath.bench.common import machine, write_result
from joulepath.engine import Engine, EngineConfig, SamplingParams, row_attention
from joulepath.model import LoadedModel, load_model
from joulepath.model.eagle import load_eagle
from joulepath.model.mtp import load_heads
from joulepath.optimize import available_modes
from joulepath.optimize.levers import apply_lever, parse_lever
from joulepath.quality import golden
from joulepath.quality.tasks import chat_prompt

PROPOSER_NAMES = ("prompt_lookup", "draft", "mtp", "eagle")
FP32_REFERENCE = "plain_fp32"  # plain decoding of the unquantized model (batch 1 only; absent with no lever)
AA_CONTROL = "plain_aa"  # a second plain engine on the same weights: the noise floor of every paired ratio


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


MIN_DECODE_S = 1.0  # plain decoding's time per repetition the workload is repeated up to (--quick: 0.15 s)


def passes_for(probe: Decoded, quick: bool) -> int:
    """How many times each repetition serves a workload's requests: short answers (arithmetic, lookup) give a
    repetition ~70 decode tokens in ~0.25 s, where one scheduling hiccup moves the ratio by 7-10 % (measured:
    24 arithmetic requests at batch 1, the same engine, 0.355-0.380 s), so they are repeated until plain
    decoding takes about MIN_DECODE_S (at most 8 times)."""
    goal = 0.15 if quick else MIN_DECODE_S
    return max(1, min(8, math.ceil(goal / max(probe.decode_s, 1e-3))))


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


def configs(
    draft: str | None, has_mtp: bool, has_eagle: bool = False, attention: str = "auto"
) -> dict[str, EngineConfig]:
    """Plain decoding (twice: the second is the A/A noise control) and each proposer, all on the same attention
    kernel (`same_attention`)."""
    out = {"plain": EngineConfig(), "prompt_lookup": EngineConfig(speculative="prompt_lookup")}
    if draft:
        out["draft"] = EngineConfig(speculative="draft", draft_model=draft)
    if has_mtp:
        out["mtp"] = EngineConfig(speculative="mtp")
    if has_eagle:
        out["eagle"] = EngineConfig(speculative="eagle")
    out[AA_CONTROL] = EngineConfig()  # last: in the rotation it sits as far from `plain` as the proposers do
    return {name: dataclasses.replace(cfg, attention=attention) for name, cfg in out.items()}


def same_attention(device: str) -> str:
    """The kernel every configuration uses, so "identical" compares like with like: the row-invariant one on a
    CPU where it runs (greedy speculation is then token-identical by construction), else SDPA (`auto` picks the
    kernel only at 1 torch thread)."""
    return "row_invariant" if device == "cpu" and row_attention.unavailable_reason() is None else "sdpa"


def default_lever(device: str = "cpu") -> str | None:
    """On a CPU int8_vnni where it runs (the main job's first choice at <= 2 threads), else none; on a GPU
    none: the models are served in bf16 there (`levered`)."""
    if device != "cpu":
        return None
    return "int8_vnni" if available_modes().get("int8_vnni") is None else None


def levered(model: str, lever: str | None, device: str) -> LoadedModel:
    """`model` on `device` (fp32 on a CPU, bf16 on a GPU) with `lever` applied, if any."""
    loaded = load_model(model, device=device, dtype=torch.float32 if device == "cpu" else torch.bfloat16)
    if lever:
        apply_lever(loaded, parse_lever(lever))
    return loaded


def run(
    model: str, draft: str | None, quick: bool, reps: int, batches: tuple[int, ...], lever: str | None = None,
    attention: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = levered(model, lever, device)
    reference = load_model(model, device=device) if lever else None
    draft_loaded = levered(draft, lever, device) if draft else None
    has_mtp = load_heads(Path(loaded.source)) is not None
    has_eagle = load_eagle(Path(loaded.source), loaded.config) is not None
    attention = attention or same_attention(device)
    cfgs = configs(draft, has_mtp, has_eagle, attention)
    n = 4 if quick else 24
    results: dict[str, Any] = {}
    identical = True
    for wname, (prompts, params) in workloads(loaded, n).items():
        for batch in batches:
            key = f"{wname}_b{batch}"
            engines = {
                name: Engine(loaded, dataclasses.replace(cfg, max_batch=batch), draft=draft_loaded)
                for name, cfg in cfgs.items()
            }
            if reference is not None and batch == 1:
                engines[FP32_REFERENCE] = Engine(reference, EngineConfig(max_batch=1, attention=attention))
            for engine in engines.values():  # warm-up: allocator, threads, first step-cost measurements
                serve(engine, prompts[:2], params, batch)
            served = prompts * passes_for(serve(engines["plain"], prompts, params, batch), quick)
            runs: dict[str, list[Decoded]] = {name: [] for name in engines}
            names = list(engines)
            for rep in range(reps):
                order = names[rep % len(names) :] + names[: rep % len(names)]  # rotate: drift favours none
                for name in order:
                    runs[name].append(serve(engines[name], served, params, batch))
            plain = runs["plain"]
            entry: dict[str, Any] = {
                "requests": len(prompts), "passes": len(served) // len(prompts),
                "plain_decode_tokens_per_rep": statistics.median(r.decode_tokens for r in plain),
                "plain_decode_tokens_per_s": _median(plain),
            }  # fmt: skip
            if FP32_REFERENCE in runs:
                ref = runs[FP32_REFERENCE]
                entry[FP32_REFERENCE] = {
                    "decode_tokens_per_s": _median(ref),
                    "plain_vs_fp32": spread(
                        [p.decode_tokens_per_s / r.decode_tokens_per_s for p, r in zip(plain, ref, strict=True)]
                    ),
                }
            entry[AA_CONTROL] = {
                "speedup": spread(
                    [
                        a.decode_tokens_per_s / p.decode_tokens_per_s
                        for a, p in zip(runs[AA_CONTROL], plain, strict=True)
                    ]
                )
            }
            for name in (n for n in names[1:] if n not in (FP32_REFERENCE, AA_CONTROL)):
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
                if FP32_REFERENCE in runs:
                    entry[name]["speedup_vs_fp32_plain"] = spread(
                        [
                            r.decode_tokens_per_s / f.decode_tokens_per_s
                            for r, f in zip(rs, runs[FP32_REFERENCE], strict=True)
                        ]
                    )
            results[key] = entry
    speedups = [e[p]["speedup"]["median"] for e in results.values() for p in PROPOSER_NAMES if p in e]
    aa = [e[AA_CONTROL]["speedup"] for e in results.values()]
    b1 = results.get("lookup_b1", {})

    def b1_speedup(p: str) -> float | None:
        return b1[p]["speedup"]["median"] if p in b1 else None

    def b1_vs_fp32(p: str) -> float | None:
        return b1[p]["speedup_vs_fp32_plain"]["median"] if "speedup_vs_fp32_plain" in b1.get(p, {}) else None

    return {
        "model": model,
        "draft_model": draft,
        "lever": lever,
        "speedup_lookup_b1_vs_fp32": b1_vs_fp32("prompt_lookup"),
        "speedup_mtp_b1_vs_fp32": b1_vs_fp32("mtp"),
        "speedup_draft_b1_vs_fp32": b1_vs_fp32("draft"),
        "quick": quick,
        "repetitions": reps,
        "speedup_lookup_b1": b1_speedup("prompt_lookup"),
        "speedup_draft_b1": b1_speedup("draft"),
        "speedup_mtp_b1": b1_speedup("mtp"),
        "speedup_eagle_b1": b1_speedup("eagle"),
        "speedup_eagle_b1_vs_fp32": b1_vs_fp32("eagle"),
        "mean_accepted_eagle": b1.get("eagle", {}).get("tokens_per_decode_step"),
        "speedup_min_any_workload": min(speedups) if speedups else None,
        "mean_accepted_lookup": b1.get("prompt_lookup", {}).get("tokens_per_decode_step"),
        "mean_accepted_mtp": b1.get("mtp", {}).get("tokens_per_decode_step"),
        "greedy_identical": identical,
        "noise_aa": {  # plain vs a second plain engine, same rotation: what the paired ratios show with no lever
            "median_min": min(a["median"] for a in aa),
            "median_max": max(a["median"] for a in aa),
            "ratio_min": min(a["min"] for a in aa),
            "ratio_max": max(a["max"] for a in aa),
        },
        "workloads": results,
        "k_choice": "adaptive: per sequence from measured acceptance and an online fit of step seconds vs tokens",
        "attention": attention,
        "machine": machine(),
    }


def _median(runs: list[Decoded]) -> float:
    return statistics.median(r.decode_tokens_per_s for r in runs)


def report(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(
        f"{r['model']} (draft {r['draft_model']}, weights {r['lever'] or 'as shipped'}) on {m['cpu']}, "
        f"{m['threads']} torch threads, {r['repetitions']} reps, {r['attention']} attention everywhere; speedups vs "
        "plain decoding on the same weights"
    )
    for key, e in r["workloads"].items():
        print(
            f"{key}: plain {e['plain_decode_tokens_per_s']:.1f} decode tokens/s ({e['requests']} requests x "
            f"{e['passes']} per repetition, {e['plain_decode_tokens_per_rep']} decode tokens)"
        )
        if FP32_REFERENCE in e:
            s = e[FP32_REFERENCE]["plain_vs_fp32"]
            print(
                f"  fp32 plain     {e[FP32_REFERENCE]['decode_tokens_per_s']:7.1f} tokens/s (reference); "
                f"{r['lever']} plain is {s['median']:.2f}x it (min {s['min']:.2f}, max {s['max']:.2f})"
            )
        aa = e[AA_CONTROL]["speedup"]
        print(f"  plain (A/A)    noise control: {aa['median']:.2f}x (min {aa['min']:.2f}, max {aa['max']:.2f})")
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
                + (f"; {x['speedup_vs_fp32_plain']['median']:.2f}x fp32 plain" if "speedup_vs_fp32_plain" in x else "")
            )
    n = r["noise_aa"]
    print(
        f"greedy identical everywhere: {r['greedy_identical']}; slowest median speedup "
        f"{r['speedup_min_any_workload']:.3f}; plain vs plain (A/A, no speculation): medians {n['median_min']:.3f}-"
        f"{n['median_max']:.3f}, single ratios {n['ratio_min']:.3f}-{n['ratio_max']:.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="4 requests per workload, batch 1 only")
    parser.add_argument("--model", default="jp-large")
    parser.add_argument("--draft", default="jp-small", help="draft model ('' for none)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--lever", default="auto", help="weight lever for target and draft: auto (int8_vnni where available), none, "
        "or a lever name (optimize.levers)"
    )  # fmt: skip
    parser.add_argument(
        "--attention", choices=("row_invariant", "sdpa"), default=None,
        help="attention kernel of every configuration (default: row_invariant on a CPU where it runs, else sdpa)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = (1,) if args.quick else (1, 8)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lever = default_lever(device) if args.lever == "auto" else None if args.lever == "none" else args.lever
    result = run(args.model, args.draft or None, args.quick, args.reps, batches, lever, args.attention)
    report(result)
    print(f"wrote {write_result('speculative' if device == 'cpu' else 'speculative_cuda', result)}")
    return 0
