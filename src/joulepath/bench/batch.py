"""Continuous batching vs one request at a time, on requests whose arrivals and lengths follow the
Azure LLM inference trace (scaled down to fit a CPU) or, without it, the synthetic generator fitted
to it. Same engine, same model, same requests: the baseline is the engine with max_batch = 1.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from joulepath.bench.common import machine, write_result
from joulepath.engine import Engine, EngineConfig, RequestRecord, SamplingParams
from joulepath.meter import auto_meter
from joulepath.model import LoadedModel, load_model
from joulepath.serving.frontend import Arrival, Frontend, Request
from joulepath.workload import SyntheticParams, Trace, generate, read_azure_csv

AZURE = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "azure_llm_inference_2023_conv.csv"


@dataclass(frozen=True)
class Workload:
    arrival_s: list[float]
    prompts: list[list[int]]
    max_tokens: list[int]
    source: str


def make_workload(
    n: int, prompt_scale: int, output_scale: int, arrival_scale: float, vocab_size: int, seed: int = 0
) -> Workload:
    """`n` consecutive requests from the trace: lengths divided by the scales, arrivals sped up."""
    trace: Trace = read_azure_csv(AZURE) if AZURE.is_file() else generate(SyntheticParams(), 600.0, seed=seed)
    start = int(np.random.default_rng(seed).integers(0, len(trace) - n))
    arrivals = (trace.arrival_s[start : start + n] - trace.arrival_s[start]) / arrival_scale
    rng = np.random.default_rng(seed)
    prompts = [
        rng.integers(0, vocab_size, max(4, int(p) // prompt_scale)).tolist()
        for p in trace.prompt_tokens[start : start + n]
    ]
    outputs = [max(2, int(o) // output_scale) for o in trace.output_tokens[start : start + n]]
    return Workload(arrivals.tolist(), prompts, outputs, trace.source)


def serve(loaded: LoadedModel, work: Workload, config: EngineConfig) -> tuple[list[RequestRecord], float, float]:
    """Replay arrivals in real time through the serving frontend; returns records (in the order they
    finished), makespan (s) and energy (J: the requests' shares of the engine steps, idle excluded)."""
    frontend = Frontend(Engine(loaded, config, meter=auto_meter()))
    arrivals = [
        Arrival(t, Request(tuple(p), SamplingParams(max_tokens=m, ignore_eos=True), request_id=f"r{i}"))
        for i, (t, p, m) in enumerate(zip(work.arrival_s, work.prompts, work.max_tokens, strict=True))
    ]
    result = frontend.replay(arrivals)
    records = [r.record for r in result.responses if r.record is not None]
    return records, result.wall_s, sum(r.energy_j for r in records)


def summarise(records: list[RequestRecord], makespan_s: float, energy_j: float) -> dict[str, Any]:
    ttft = np.array([r.ttft_s for r in records])
    tpot = np.array([r.tpot_s for r in records if r.output_tokens > 1])
    tokens = sum(r.output_tokens for r in records)
    return {
        "output_tokens_per_s": tokens / makespan_s,
        "makespan_s": makespan_s,
        "ttft_p50_s": float(np.percentile(ttft, 50)),
        "ttft_p99_s": float(np.percentile(ttft, 99)),
        "tpot_p50_s": float(np.percentile(tpot, 50)),
        "tpot_p99_s": float(np.percentile(tpot, 99)),
        "j_per_output_token": energy_j / tokens,
        "energy_provenance": records[0].energy_provenance if records else "none",
    }


SWEEP = ((4, 6), (8, 12), (16, 16), (32, 32))  # (max_batch, tokens per step)


def run(
    model: str, n_requests: int, quick: bool, max_batch: int = 8, step_tokens: int = 12, sweep: bool = False
) -> dict[str, Any]:
    n = 8 if quick else n_requests
    loaded = load_model(model, device="cuda" if torch.cuda.is_available() else "cpu")
    vocab = loaded.config.vocab_size
    work = make_workload(n, prompt_scale=32, output_scale=8, arrival_scale=20.0, vocab_size=vocab)
    serve(loaded, make_workload(2, 32, 8, 20.0, vocab, seed=1), EngineConfig(max_batch=4))  # warm-up
    serial = summarise(*serve(loaded, work, EngineConfig(max_batch=1, max_tokens_per_step=4096)))
    configs = SWEEP if sweep else ((max_batch, step_tokens),)
    points = []
    for mb, st in configs:
        batched = summarise(*serve(loaded, work, EngineConfig(max_batch=mb, max_tokens_per_step=st)))
        points.append(
            {
                "max_batch": mb,
                "max_tokens_per_step": st,
                "continuous_batching": batched,
                "throughput_ratio": batched["output_tokens_per_s"] / serial["output_tokens_per_s"],
                "p99_tpot_ratio": batched["tpot_p99_s"] / serial["tpot_p99_s"],
                "p99_ttft_ratio": batched["ttft_p99_s"] / serial["ttft_p99_s"],
            }
        )
    head = next((p for p in points if p["max_batch"] == max_batch), points[0])
    return {
        "model": model,
        "n_requests": n,
        "workload": f"{work.source}; prompts/32, outputs/8, arrivals x20",
        "one_at_a_time": serial,
        **head,
        "sweep": points,
        "quick": quick,
        "machine": machine(),
    }


def report(r: dict[str, Any]) -> None:
    print(f"{r['model']}: {r['n_requests']} requests ({r['workload']})")
    print(f"{'':24}{'tokens/s':>10}{'TTFT p50':>10}{'TTFT p99':>10}{'TPOT p50':>10}{'TPOT p99':>10}{'J/token':>9}")
    rows = [("one at a time", r["one_at_a_time"])]
    rows += [(f"batching {p['max_batch']}/{p['max_tokens_per_step']}", p["continuous_batching"]) for p in r["sweep"]]
    for name, s in rows:
        print(
            f"{name:24}{s['output_tokens_per_s']:>10.1f}{s['ttft_p50_s']:>10.2f}{s['ttft_p99_s']:>10.2f}"
            f"{1e3 * s['tpot_p50_s']:>8.0f}ms{1e3 * s['tpot_p99_s']:>8.0f}ms{s['j_per_output_token']:>9.3f}"
        )
    print(f"J/token: {r['one_at_a_time']['energy_provenance']}")
    for p in r["sweep"]:
        print(
            f"batching {p['max_batch']}/{p['max_tokens_per_step']}: throughput {p['throughput_ratio']:.2f}x at "
            f"p99 TPOT {p['p99_tpot_ratio']:.2f}x, p99 TTFT {p['p99_ttft_ratio']:.2f}x of one at a time"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="8 requests instead of --requests")
    parser.add_argument("--model", default="dummy:qwen2.5-0.5b")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=8, help="running sequences per step")
    parser.add_argument("--step-tokens", type=int, default=12, help="tokens per step (decode + prefill chunks)")
    parser.add_argument("--sweep", action="store_true", help=f"also try (max_batch, step tokens) in {SWEEP}")
    args = parser.parse_args(argv)
    result = run(args.model, args.requests, args.quick, args.max_batch, args.step_tokens, args.sweep)
    report(result)
    print(f"wrote {write_result('batch', result)}")
    return 0
