"""Paged KV cache (Kwon et al., vLLM, SOSP 2023): one pool of fixed-size blocks per layer and a block
table per sequence, so sequences grow without reserving their maximum length up front.

Layout: k, v: (n_layers, n_blocks * block_size, n_kv_heads, head_dim) — a flat slot axis, so a token's
slot is `block * block_size + offset` and writes/reads are single index ops per layer.

With `quantized=True` keys and values are stored as int8 with one scale per token and KV head (absmax /
127, in the model's dtype): half the bytes of bf16, a quarter of fp32, for long contexts where KV reads
dominate attention. Exactness is not promised, so the engine uses it only behind the golden gate
(`optimize.levers`, lever `kv_int8`). `write` quantizes, `gather` dequantizes only the slots read.

Blocks are reference-counted so that sequences can share them (a prefix cache, a forked sequence, a
speculative branch): `reserve` takes fresh blocks at count 1, `share`/`fork` add a reference, and
`release`/`truncate` drop one; a block returns to the pool when its count reaches 0. A shared block is
read-only by convention: share only full blocks, or let the owner write before anyone shares.
"""

from __future__ import annotations

import torch
from torch import Tensor

from joulepath.model.config import ModelConfig


class KVCacheFull(RuntimeError):
    """No free block is left; the scheduler preempts a sequence and retries."""


class PagedKVCache:
    """Block pool + per-sequence block tables. Not thread-safe; one engine owns it."""

    def __init__(
        self,
        cfg: ModelConfig,
        n_blocks: int,
        block_size: int = 16,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        quantized: bool = False,
    ) -> None:
        if n_blocks < 1 or block_size < 1:
            raise ValueError(f"n_blocks and block_size must be >= 1, got {n_blocks}, {block_size}")
        self.block_size, self.n_blocks, self.quantized, self.dtype = block_size, n_blocks, quantized, dtype
        shape = (cfg.n_layers, n_blocks * block_size, cfg.n_kv_heads, cfg.head_dim)
        store = torch.int8 if quantized else dtype
        self.k = torch.zeros(shape, device=device, dtype=store)
        self.v = torch.zeros(shape, device=device, dtype=store)
        scale_shape = (cfg.n_layers, n_blocks * block_size, cfg.n_kv_heads, 1) if quantized else (0,)
        self.k_scale = torch.zeros(scale_shape, device=device, dtype=dtype)
        self.v_scale = torch.zeros(scale_shape, device=device, dtype=dtype)
        self._free = list(range(n_blocks - 1, -1, -1))  # a stack: lowest block ids first
        self._refs = [0] * n_blocks  # tables holding each block
        self.tables: dict[int, list[int]] = {}

    @staticmethod
    def bytes_per_block(cfg: ModelConfig, block_size: int, dtype: torch.dtype, quantized: bool = False) -> int:
        elem = torch.tensor([], dtype=dtype).element_size()
        if quantized:  # int8 values plus one scale per token and KV head
            return 2 * cfg.n_layers * block_size * cfg.n_kv_heads * (cfg.head_dim + elem)
        return 2 * cfg.n_layers * block_size * cfg.n_kv_heads * cfg.head_dim * elem

    @staticmethod
    def bytes_per_block_of(cache: PagedKVCache) -> int:
        """Bytes of keys and values (and their scales) one block of `cache` holds."""
        bs = cache.block_size
        scales = 2 * cache.k_scale[:, :bs].numel() * cache.k_scale.element_size() if cache.quantized else 0
        return 2 * cache.k[:, :bs].numel() * cache.k.element_size() + scales

    def write(self, layer: int, slots: Tensor, k: Tensor, v: Tensor) -> None:
        """Store keys and values (T, KV, D) of one layer at flat `slots` (quantizing them if int8)."""
        if not self.quantized:
            self.k[layer].index_copy_(0, slots, k)
            self.v[layer].index_copy_(0, slots, v)
            return
        for x, store, scales in ((k, self.k, self.k_scale), (v, self.v, self.v_scale)):
            scale = x.abs().amax(-1, keepdim=True).clamp_min(1e-8) / 127  # (T, KV, 1)
            store[layer].index_copy_(0, slots, torch.round(x / scale).clamp_(-127, 127).to(torch.int8))
            scales[layer].index_copy_(0, slots, scale.to(scales.dtype))

    def gather(self, layer: int, index: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of one layer at `index` (any shape of flat slots), dequantized if int8."""
        if not self.quantized:
            return self.k[layer][index], self.v[layer][index]
        return (
            self.k[layer][index].to(self.dtype) * self.k_scale[layer][index],
            self.v[layer][index].to(self.dtype) * self.v_scale[layer][index],
        )

    @classmethod
    def from_budget(
        cls,
        cfg: ModelConfig,
        memory_bytes: int,
        block_size: int = 16,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        quantized: bool = False,
    ) -> PagedKVCache:
        """As many blocks as fit in `memory_bytes` (twice to four times as many with int8)."""
        n = memory_bytes // cls.bytes_per_block(cfg, block_size, dtype, quantized)
        if n < 1:
            raise ValueError(f"KV budget of {memory_bytes} bytes holds no block; raise it")
        return cls(cfg, int(n), block_size, device, dtype, quantized)

    @property
    def free_blocks(self) -> int:
        return len(self._free)

    def blocks_for(self, n_tokens: int) -> int:
        return -(-n_tokens // self.block_size)

    def extra_blocks(self, seq_id: int, total_tokens: int) -> int:
        """Blocks `seq_id` still needs to hold `total_tokens` tokens."""
        return max(0, self.blocks_for(total_tokens) - len(self.tables.get(seq_id, ())))

    def reserve(self, seq_id: int, total_tokens: int) -> None:
        """Grow `seq_id`'s table to hold `total_tokens` tokens; raises KVCacheFull (taking nothing)."""
        need = self.extra_blocks(seq_id, total_tokens)
        if need > len(self._free):
            raise KVCacheFull(f"sequence {seq_id} needs {need} blocks, {len(self._free)} free")
        table = self.tables.setdefault(seq_id, [])
        for _ in range(need):
            block = self._free.pop()
            self._refs[block] = 1
            table.append(block)

    def refcount(self, block: int) -> int:
        """How many sequences' tables hold `block` (0: free)."""
        return self._refs[block]

    def share(self, seq_id: int, blocks: list[int]) -> None:
        """Append blocks in use by other sequences to `seq_id`'s table (one more reference each)."""
        if any(self._refs[b] < 1 for b in blocks):
            raise ValueError(f"only blocks in use can be shared; free among {blocks}")
        for b in blocks:
            self._refs[b] += 1
        self.tables.setdefault(seq_id, []).extend(blocks)

    def retain(self, blocks: list[int]) -> None:
        """One more reference to blocks in use, held outside any table (the prefix cache's)."""
        if any(self._refs[b] < 1 for b in blocks):
            raise ValueError(f"only blocks in use can be retained; free among {blocks}")
        for b in blocks:
            self._refs[b] += 1

    def drop(self, blocks: list[int]) -> None:
        """Give back references taken with `retain`; a block returns to the pool at count 0."""
        self._drop(blocks)

    def fork(self, parent: int, child: int) -> None:
        """`child` starts with all of `parent`'s blocks, shared (no copy)."""
        if self.tables.get(child):
            raise ValueError(f"sequence {child} already holds blocks; fork into a new sequence")
        self.share(child, list(self.tables.get(parent, ())))

    def truncate(self, seq_id: int, n_tokens: int) -> None:
        """Keep only the blocks `seq_id` needs for its first `n_tokens` tokens; drop the rest (rejected
        draft tokens, a rolled-back branch). Slots of a kept, partly filled block are simply rewritten."""
        table = self.tables.get(seq_id, [])
        keep = self.blocks_for(max(0, n_tokens))
        self._drop(table[keep:])
        del table[keep:]

    def release(self, seq_id: int) -> None:
        """Drop all of a sequence's blocks (each returns to the pool if no other sequence holds it)."""
        self._drop(self.tables.pop(seq_id, []))

    def _drop(self, blocks: list[int]) -> None:
        for b in reversed(blocks):  # reversed: the pool hands out the lowest ids first again
            self._refs[b] -= 1
            if self._refs[b] == 0:
                self._free.append(b)

    def slots(self, seq_id: int, start: int, n: int) -> Tensor:
        """Flat slot indices of token positions [start, start + n) of `seq_id` (int64, on the cache's device)."""
        table = torch.tensor(self.tables[seq_id], dtype=torch.int64)
        pos = torch.arange(start, start + n)
        slots = table[pos // self.block_size] * self.block_size + pos % self.block_size
        return slots.to(self.k.device)
