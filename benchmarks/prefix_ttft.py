"""TTFT of a request whose ~1,000-token prompt prefix is in the prefix cache vs cold (jp-small, CPU).

Interleaved A B C per repetition, so drift on a shared machine hits all three alike:
  A  cold: prefix cache on, a salt nobody used yet (no hit; pays hashing and insertion)
  B  cached: prefix cache on, the same prefix served once before under the same salt
  C  off: prefix cache off (today's engine)
`python benchmarks/prefix_ttft.py [--reps 3] [--prefix 1000]`; prints median and spread (min..max) per case.
"""

import argparse
import random
import statistics

import torch

from joulepath.engine import Engine, EngineConfig, SamplingParams
from joulepath.model import load_model


def ttft_s(engine: Engine, ids: list[int], salt: str) -> float:
    rid = engine.add_request(ids, SamplingParams(max_tokens=1, ignore_eos=True), cache_salt=salt)
    engine.run_until_done()
    return engine.record(rid).ttft_s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--prefix", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(2)
    loaded = load_model("jp-small")
    rng = random.Random(0)
    eos = set(loaded.config.eos_token_ids)
    vocab = [t for t in range(5, loaded.config.vocab_size) if t not in eos]
    prefix = [rng.choice(vocab) for _ in range(args.prefix)]
    on = Engine(loaded, EngineConfig(prefix_cache=True))
    off = Engine(loaded, EngineConfig())
    ttft_s(on, [*prefix, 10], "warmup")  # burn-in: allocator, first-call costs
    ttft_s(off, [*prefix, 10], "")
    times: dict[str, list[float]] = {"cold": [], "cached": [], "off": []}
    for rep in range(args.reps):
        times["cold"].append(ttft_s(on, [*prefix, 11, 12], f"cold-{rep}"))
        ttft_s(on, [*prefix, 13], f"hot-{rep}")  # puts the prefix in the cache under this salt
        times["cached"].append(ttft_s(on, [*prefix, 11, 12], f"hot-{rep}"))
        times["off"].append(ttft_s(off, [*prefix, 11, 12], ""))
    for name, ts in times.items():
        med_ms, lo_ms, hi_ms = statistics.median(ts) * 1e3, min(ts) * 1e3, max(ts) * 1e3
        print(f"{name:>6}: TTFT median {med_ms:8.2f} ms  (min {lo_ms:.2f}, max {hi_ms:.2f})")
    speedup = statistics.median(times["cold"]) / statistics.median(times["cached"])
    print(f"speedup cached vs cold: {speedup:.1f}x over {args.prefix + 2}-token prompts, {args.reps} repetitions")


if __name__ == "__main__":
    main()
