"""KV offload tiers: evicted prefix-cache blocks go to host memory / a memory-mapped file and come back
bit-exact when a hit needs them and copying is cheaper than recomputing; otherwise they are recomputed."""

import dataclasses
from pathlib import Path

import pytest
import torch

from joulepath.engine import Engine, EngineConfig, SamplingParams
from joulepath.engine.kv_cache import PagedKVCache
from joulepath.engine.kv_offload import BlockTier, KVOffload, StoredBlock, TierSpec
from joulepath.model import LoadedModel

BS = 4


def _block_bytes(tiny: LoadedModel) -> int:
    return PagedKVCache.bytes_per_block(tiny.config, BS, next(tiny.model.parameters()).dtype)


def test_a_full_tier_passes_its_oldest_block_down_and_the_last_tier_drops_it(tiny: LoadedModel, tmp_path: Path) -> None:
    kv = PagedKVCache(tiny.config, 8, BS, dtype=torch.float64)
    kv.k.normal_()
    kv.v.normal_()
    bb = _block_bytes(tiny)
    off = KVOffload(kv, [TierSpec("host", 2 * bb), TierSpec("disk", 1 * bb)], tmp_path)
    for b in range(4):  # blocks 0..3 leave the pool in this order
        off.offload(100 + b, StoredBlock(0, (b,)), b)
    assert [t.capacity_blocks for t in off.tiers] == [2, 1]
    assert off.tier_of(103, 0, (3,)) == 0 and off.tier_of(102, 0, (2,)) == 0  # newest two in host memory
    assert off.tier_of(101, 0, (1,)) == 1  # pushed down to disk
    assert off.tier_of(100, 0, (0,)) is None  # pushed out of the last tier: gone
    assert off.tier_of(101, 0, (9,)) is None  # same hash, other tokens: never a wrong hit
    meta, data = off.take(101)
    assert meta == StoredBlock(0, (1,))
    assert torch.equal(data[0], kv.k[:, BS : 2 * BS]) and torch.equal(data[1], kv.v[:, BS : 2 * BS])  # bit-exact
    assert off.tiers[1].stats.restored == 1 and off.tiers[0].stats.dropped == 2
    disk_file = off.tiers[1]._path
    assert disk_file is not None and disk_file.exists() and disk_file.parent == tmp_path
    off.close()
    assert not disk_file.exists()


def test_restore_is_declined_when_recomputing_is_measured_cheaper(tiny: LoadedModel) -> None:
    kv = PagedKVCache(tiny.config, 4, BS, dtype=torch.float64)
    off = KVOffload(kv, [TierSpec("host", 4 * _block_bytes(tiny))])
    assert off.tiers[0].stats.restore_s_per_block > 0  # calibrated at creation
    assert off.worth_restoring(0)  # nothing measured about prefill yet
    off.observe_step(seconds=1.0, tokens_computed=1)  # a decode step: ignored
    assert off.prefill_s_per_token is None
    off.observe_step(seconds=1.0, tokens_computed=2 * BS)  # very slow prefill: restoring pays
    assert off.worth_restoring(0)
    off.prefill_s_per_token = 1e-15  # prefill far cheaper than any copy
    assert not off.worth_restoring(0)


def _requests() -> list[tuple[list[int], int]]:
    """Eight distinct 16-token prefixes, each asked twice, far apart: the pool evicts a prefix between its
    two uses, so a second use can only hit through an offload tier."""
    prefixes = [[1 + (7 * p + 3 * i) % 250 for i in range(16)] for p in range(8)]
    first = [([*pre, 251, 252], 3) for pre in prefixes]
    again = [([*pre, 253], 3) for pre in prefixes]
    return first + again


def _serve(tiny: LoadedModel, config: EngineConfig) -> tuple[Engine, list[list[int]]]:
    engine = Engine(tiny, config)
    outs = []
    for prompt, m in _requests():  # one at a time, in order: the eviction order is deterministic
        rid = engine.add_request(prompt, SamplingParams(max_tokens=m, ignore_eos=True))
        engine.run_until_done()
        outs.append(engine.output_ids(rid))
    return engine, outs


@pytest.mark.parametrize("kind", ["host", "disk"])
def test_offloaded_blocks_come_back_and_greedy_output_is_identical(
    tiny: LoadedModel, kind: str, tmp_path: Path
) -> None:
    pool = EngineConfig(12 * _block_bytes(tiny), BS, max_batch=1, max_tokens_per_step=32, prefix_cache=True)
    _, reference = _serve(tiny, dataclasses.replace(pool, prefix_cache=False))
    plain_engine, plain = _serve(tiny, pool)
    tier = {"offload_host_bytes": 64 * _block_bytes(tiny)} if kind == "host" else {
        "offload_disk_bytes": 64 * _block_bytes(tiny), "offload_dir": str(tmp_path)}  # fmt: skip
    engine, offloaded = _serve(tiny, dataclasses.replace(pool, **tier))
    assert offloaded == plain == reference
    hits_plain = sum(r.cached_prompt_tokens for r in plain_engine.records)
    restored = sum(r.restored_prompt_tokens for r in engine.records)
    assert restored >= 8 * 12  # each second use finds its first three blocks in the tier
    assert sum(r.cached_prompt_tokens for r in engine.records) >= hits_plain + restored
    assert engine.prefix_cache is not None and engine.prefix_cache.restored_blocks * BS == restored


def test_declined_restores_are_recomputed_and_counted(tiny: LoadedModel) -> None:
    config = EngineConfig(
        12 * _block_bytes(tiny), BS, max_batch=1, max_tokens_per_step=32, prefix_cache=True,
        offload_host_bytes=64 * _block_bytes(tiny),
    )  # fmt: skip
    engine = Engine(tiny, config)
    assert engine.offload is not None
    engine.offload.observe_step(1e-12, 1_000_000)  # as if prefill were free: never worth a copy
    engine.offload.observe_step = lambda seconds, tokens_computed: None  # type: ignore[method-assign]
    _, reference = _serve(tiny, dataclasses.replace(config, prefix_cache=False, offload_host_bytes=0))
    outs = []
    for prompt, m in _requests():
        rid = engine.add_request(prompt, SamplingParams(max_tokens=m, ignore_eos=True))
        engine.run_until_done()
        outs.append(engine.output_ids(rid))
    assert outs == reference
    assert engine.prefix_cache is not None
    assert engine.prefix_cache.restored_blocks == 0 and engine.prefix_cache.declined_blocks >= 8 * 3


def test_bad_offload_settings_say_what_to_change(tiny: LoadedModel, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="turn prefix_cache on"):
        EngineConfig(offload_host_bytes=1 << 20)
    with pytest.raises(ValueError, match="offload_disk_bytes must be >= 0"):
        EngineConfig(prefix_cache=True, offload_disk_bytes=-1)
    with pytest.raises(ValueError, match="kind must be one of"):
        TierSpec("tape", 1)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    kv = PagedKVCache(tiny.config, 2, BS)
    with pytest.raises(ValueError, match="writable directory"):
        BlockTier(TierSpec("disk", 1 << 20), (2, 2, BS, 2, 8), torch.float32, kv.k.device, blocker / "sub")


def test_a_modelled_tier_counts_the_blocks_it_would_have_served(tiny: LoadedModel, tmp_path: Path) -> None:
    bb = _block_bytes(tiny)
    pool = EngineConfig(12 * bb, BS, max_batch=1, max_tokens_per_step=32, prefix_cache=True)
    _, reference = _serve(tiny, pool)
    modelled, outs = _serve(tiny, dataclasses.replace(pool, offload_modelled_bytes=64 * bb))
    assert outs == reference  # a modelled tier stores nothing and changes nothing
    assert modelled.offload is not None and not modelled.offload.tiers
    real, _ = _serve(tiny, dataclasses.replace(pool, offload_disk_bytes=64 * bb, offload_dir=str(tmp_path)))
    assert real.prefix_cache is not None
    assert modelled.offload.modelled.hit_blocks == real.prefix_cache.restored_blocks >= 8 * 3  # same size, same hits
    small, _ = _serve(tiny, dataclasses.replace(pool, offload_modelled_bytes=2 * bb))
    assert small.offload is not None and small.offload.modelled.hit_blocks < modelled.offload.modelled.hit_blocks
