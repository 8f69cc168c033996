import dataclasses
import random

import pytest
import torch

from joulepath.engine import Engine, EngineConfig, SamplingParams
from joulepath.engine.kv_cache import PagedKVCache
from joulepath.model import DenseCausalAttention, LoadedModel, load_model


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    """A float64 tiny model: exactness tests compare argmaxes, so keep rounding far from ties."""
    return load_model("dummy:tiny-llama", dtype=torch.float64, seed=1)


@pytest.fixture(scope="module")
def tiny_mistral() -> LoadedModel:
    return load_model("dummy:tiny-mistral", dtype=torch.float64, seed=2)


@torch.no_grad()
def reference_greedy(loaded: LoadedModel, ids: list[int], n: int) -> list[int]:
    """Greedy decoding by full recomputation with dense attention: no cache involved."""
    device = next(loaded.model.parameters()).device
    seq = list(ids)
    for _ in range(n):
        attend = DenseCausalAttention([len(seq)], loaded.config.sliding_window)
        tokens, positions = torch.tensor(seq, device=device), torch.arange(len(seq), device=device)
        seq.append(int(loaded.model(tokens, positions, attend)[-1].argmax()))
    return seq[len(ids) :]


BS = 4  # KV block size of the speculative tests


def spec_requests(n: int, seed: int) -> list[tuple[list[int], int]]:
    """Prompts that repeat themselves (so lookups find matches) and plain random ones."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        motif = [rng.randrange(3, 250) for _ in range(rng.randrange(2, 6))]
        prompt = motif * rng.randrange(2, 6) if rng.random() < 0.7 else [rng.randrange(3, 250) for _ in range(9)]
        out.append((prompt, rng.randrange(2, 24)))
    return out


def serve_requests(
    loaded: LoadedModel, config: EngineConfig, requests: list[tuple[list[int], int]]
) -> tuple[Engine, list]:
    engine = Engine(loaded, config)
    ids = [engine.add_request(p, SamplingParams(max_tokens=m, ignore_eos=True)) for p, m in requests]
    engine.run_until_done()
    return engine, [engine.output_ids(i) for i in ids]


def pressure_config(loaded: LoadedModel, max_batch: int) -> EngineConfig:
    """24 blocks of 4 tokens and 16-token steps: chunked prefills and preemptions happen."""
    kv = 24 * PagedKVCache.bytes_per_block(loaded.config, BS, next(loaded.model.parameters()).dtype)
    return EngineConfig(kv, BS, max_batch=max_batch, max_tokens_per_step=16)


def identical_under_pressure(loaded: LoadedModel, speculative: str, max_batch: int, seed: int) -> tuple[int, int]:
    """Serve 40 requests under KV pressure plain and with `speculative` drafting k = max every step; assert the
    greedy outputs are token-identical (and, at batch 8, that preemptions happened); (proposed, accepted)."""
    requests = spec_requests(40, seed=seed)
    base = pressure_config(loaded, max_batch)
    _, plain = serve_requests(loaded, base, requests)
    config = dataclasses.replace(base, speculative=speculative, spec_adaptive=False)
    engine, spec = serve_requests(loaded, config, requests)
    assert spec == plain
    if max_batch == 8:
        assert sum(r.preemptions for r in engine.records) > 0  # the pressure the test claims
    return sum(r.draft_proposed for r in engine.records), sum(r.draft_accepted for r in engine.records)
