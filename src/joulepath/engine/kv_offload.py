"""KV offload tiers: blocks the prefix cache evicts go one memory tier down instead of vanishing, and come
back when a later prefix hit needs them, if copying them back is cheaper than recomputing their prefill
(LMCache and vLLM's KV connector offload to CPU memory and disk; SGLang's HiCache keeps a host tier).

Tiers, fastest first: `host` (pinned host DRAM under a GPU pool; plain DRAM under a CPU pool) and `disk`
(a memory-mapped file on local disk: the page cache keeps hot blocks in DRAM, the rest is on disk). A tier
that is full passes its least recently stored block to the next one; the last tier drops it.

A modelled tier (CXL-attached memory, PIM) has no bytes here: it is a list of the hashes it would hold
(a ghost list, as ARC keeps), fed by the same evictions, so a run counts the blocks such a tier would
have served; the cost of serving them comes from the catalog (`hw.kv_tiers`, labelled estimated).

A block is stored with its chained hash, its parent's hash and its tokens, so a restore is as exact as a
prefix-cache hit: the KV bytes come back bit for bit, and the same tokens after the same prefix are
checked before use.

Whether to restore is decided from measurements on this machine: the seconds to copy a block back from
each tier (timed once when the tier is made, then a running mean of real restores) against the seconds
the engine spends per token computed in its steps (a running mean the engine feeds). A run of offloaded
blocks is restored only while restoring is the cheaper of the two.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from joulepath.engine.kv_cache import PagedKVCache

TIER_KINDS = ("host", "disk")
EMA_WEIGHT = 0.2  # weight of a new measurement in a running mean


@dataclass(frozen=True)
class TierSpec:
    """One offload tier: `kind` is "host" or "disk"; `capacity_bytes` of KV it may hold."""

    kind: str
    capacity_bytes: int

    def __post_init__(self) -> None:
        if self.kind not in TIER_KINDS:
            raise ValueError(f"KV offload tier kind must be one of {TIER_KINDS}, got {self.kind!r}")
        if self.capacity_bytes < 0:
            raise ValueError(f"KV offload tier {self.kind}: capacity_bytes must be >= 0, got {self.capacity_bytes}")


@dataclass(frozen=True)
class StoredBlock:
    """What a tier keeps beside a block's KV: enough to check a hit exactly."""

    parent: int
    tokens: tuple[int, ...]


@dataclass
class TierStats:
    kind: str
    capacity_blocks: int
    stored: int = 0  # blocks written into this tier
    restored: int = 0  # blocks copied back from it into the pool
    dropped: int = 0  # blocks that left it for the next tier (or, from the last tier, for good)
    restore_s_per_block: float = 0.0  # measured (calibrated at creation, then a running mean)


class BlockTier:
    """Fixed slots for `capacity_blocks` blocks of KV ((2, layers, block_size, kv_heads, head_dim) each), LRU."""

    def __init__(
        self,
        spec: TierSpec,
        block_shape: tuple[int, ...],
        dtype: torch.dtype,
        pool_device: torch.device,
        directory: Path | None,
    ) -> None:
        elem = torch.tensor([], dtype=dtype).element_size()
        block_bytes = elem * int(torch.Size(block_shape).numel())
        n = spec.capacity_bytes // block_bytes
        self.spec, self.block_bytes = spec, block_bytes
        self._path: Path | None = None
        self.data = self._allocate(spec.kind, (n, *block_shape), dtype, pool_device, directory)
        self._free = list(range(n - 1, -1, -1))
        self._slots: OrderedDict[int, tuple[int, StoredBlock]] = OrderedDict()  # hash -> (slot, meta), LRU first
        self.stats = TierStats(spec.kind, n)

    def _allocate(
        self, kind: str, shape: tuple[int, ...], dtype: torch.dtype, pool_device: torch.device, directory: Path | None
    ) -> Tensor:
        if kind == "host":
            pin = pool_device.type == "cuda"  # pinned pages make host<->GPU copies asynchronous DMA
            return torch.empty(shape, dtype=dtype, pin_memory=pin)
        numel = int(torch.Size(shape).numel())
        folder = directory or Path(tempfile.gettempdir())
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix="joulepath-kv-", suffix=".bin", dir=folder)
            os.close(fd)
        except OSError as exc:
            raise ValueError(
                f"KV offload disk tier: cannot create a file in {folder} ({exc}); set a writable directory"
            ) from None
        self._path = Path(name)
        # shared=True maps the file: writes go to the page cache and, under memory pressure, to disk.
        return torch.from_file(name, shared=True, size=numel, dtype=dtype).view(shape)

    @property
    def capacity_blocks(self) -> int:
        return self.stats.capacity_blocks

    def __contains__(self, h: int) -> bool:
        return h in self._slots

    def meta(self, h: int) -> StoredBlock:
        return self._slots[h][1]

    def put(self, h: int, meta: StoredBlock, kv: Tensor) -> tuple[int, StoredBlock, Tensor] | None:
        """Store a block (copying `kv`); returns the block it pushed out (hash, meta, a copy of its KV), if any."""
        if self.capacity_blocks == 0:
            return h, meta, kv
        out = None
        if not self._free:
            old, (slot, old_meta) = self._slots.popitem(last=False)
            out = (old, old_meta, self.data[slot].clone())
            self._free.append(slot)
            self.stats.dropped += 1
        slot = self._free.pop()
        self.data[slot].copy_(kv)
        self._slots[h] = (slot, meta)
        self.stats.stored += 1
        return out

    def take(self, h: int) -> tuple[StoredBlock, Tensor]:
        """Remove a block; returns its meta and a view of its KV, valid until the next `put`."""
        slot, meta = self._slots.pop(h)
        self._free.append(slot)
        self.stats.restored += 1
        return meta, self.data[slot]

    def close(self) -> None:
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None


class ModelledTier:
    """The hashes a tier of `capacity_blocks` would hold (LRU), with no KV: what it would have served."""

    def __init__(self, capacity_blocks: int) -> None:
        self.capacity_blocks = capacity_blocks
        self._hashes: OrderedDict[int, None] = OrderedDict()
        self.hit_blocks = 0

    def add(self, h: int) -> None:
        if self.capacity_blocks < 1:
            return
        self._hashes[h] = None
        self._hashes.move_to_end(h)
        if len(self._hashes) > self.capacity_blocks:
            self._hashes.popitem(last=False)

    def serve(self, hashes: list[int]) -> int:
        """How many of `hashes` (a chain, in order) it would serve: the run it holds from the first; those
        go back to the pool, so they leave the tier."""
        n = 0
        for h in hashes:
            if h not in self._hashes:
                break
            del self._hashes[h]
            n += 1
        self.hit_blocks += n
        return n


class KVOffload:
    """The tier chain under one paged KV cache, and the restore-or-recompute decision."""

    def __init__(
        self,
        cache: PagedKVCache,
        tiers: list[TierSpec],
        directory: str | Path | None = None,
        modelled_bytes: int = 0,
    ) -> None:
        if cache.quantized and tiers:
            raise ValueError(
                "KV offload tiers hold full-precision blocks; with an int8 KV cache turn the tiers off "
                "(offload_host_bytes = offload_disk_bytes = 0) or the int8 KV cache off"
            )
        self.cache = cache
        k = cache.k
        block_shape = (2, k.shape[0], cache.block_size, k.shape[2], k.shape[3])
        folder = Path(directory) if directory else None
        self.tiers = [BlockTier(spec, block_shape, k.dtype, k.device, folder) for spec in tiers if spec.capacity_bytes]
        self.pool_block_bytes = PagedKVCache.bytes_per_block_of(cache)
        self.modelled = ModelledTier(modelled_bytes // self.pool_block_bytes)
        self.prefill_s_per_token: float | None = None  # measured by the engine's steps
        self.declined = 0  # offloaded blocks a hit could have used, recomputed because that was cheaper
        for tier in self.tiers:
            tier.stats.restore_s_per_block = self._calibrate(tier)

    def _block_view(self, block: int) -> Tensor:
        """The pool's KV of one block as (2, layers, block_size, kv_heads, head_dim)."""
        bs = self.cache.block_size
        sl = slice(block * bs, (block + 1) * bs)
        return torch.stack((self.cache.k[:, sl], self.cache.v[:, sl]))

    def _calibrate(self, tier: BlockTier) -> float:
        """Seconds to copy one block from `tier` into the pool, timed on a scratch copy (median of 5)."""
        if tier.capacity_blocks == 0:
            return 0.0
        scratch = torch.empty_like(self._block_view(0))
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            scratch.copy_(tier.data[0])
            if scratch.is_cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return sorted(times)[2]

    def offload(self, h: int, meta: StoredBlock, block: int) -> None:
        """A block leaves the pool: store it in the first tier; what that pushes out goes one tier down."""
        self.modelled.add(h)
        item: tuple[int, StoredBlock, Tensor] | None = (h, meta, self._block_view(block))
        for tier in self.tiers:
            if item is None:
                return
            item = tier.put(*item)

    def tier_of(self, h: int, parent: int, tokens: tuple[int, ...]) -> int | None:
        """The tier holding this exact block (same hash, parent and tokens), or None."""
        for i, tier in enumerate(self.tiers):
            if h in tier:
                m = tier.meta(h)
                return i if m.parent == parent and m.tokens == tokens else None
        return None

    def worth_restoring(self, tier: int) -> bool:
        """Copying one block back from `tier` costs less than computing its tokens' prefill (measured)."""
        if self.prefill_s_per_token is None:
            return True  # nothing measured yet: a copy of a few KiB beats a forward pass on every device we know
        recompute = self.prefill_s_per_token * self.cache.block_size
        return self.tiers[tier].stats.restore_s_per_block < recompute

    def take(self, h: int) -> tuple[StoredBlock, Tensor]:
        """Remove a block from whichever tier holds it; returns its meta and a copy of its KV. The copy is
        the tier's read, timed into that tier's running mean of restore seconds per block."""
        for tier in self.tiers:
            if h in tier:
                t0 = time.perf_counter()
                meta, view = tier.take(h)
                kv = view.clone()
                s = tier.stats
                s.restore_s_per_block += EMA_WEIGHT * (time.perf_counter() - t0 - s.restore_s_per_block)
                return meta, kv
        raise KeyError(h)

    def write(self, block: int, kv: Tensor) -> None:
        """Copy a taken block's KV into pool block `block`."""
        bs = self.cache.block_size
        sl = slice(block * bs, (block + 1) * bs)
        self.cache.k[:, sl].copy_(kv[0])
        self.cache.v[:, sl].copy_(kv[1])

    def observe_step(self, seconds: float, tokens_computed: int) -> None:
        """The engine computed `tokens_computed` tokens in `seconds`: update the prefill cost per token."""
        if tokens_computed < self.cache.block_size:
            return  # a decode-only step says little about prefill's cost per token
        per = seconds / tokens_computed
        old = self.prefill_s_per_token
        self.prefill_s_per_token = per if old is None else old + EMA_WEIGHT * (per - old)

    def stats(self) -> list[TierStats]:
        return [t.stats for t in self.tiers]

    def close(self) -> None:
        for t in getattr(self, "tiers", []):  # a KVOffload refused in __init__ has none
            t.close()

    def __del__(self) -> None:
        self.close()
