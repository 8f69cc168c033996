"""Paged KV cache (Kwon et al., vLLM, SOSP 2023): one pool of fixed-size blocks per layer and a block
table per sequence, so sequences grow without reserving their maximum length up front.

Layout: k, v: (n_layers, n_blocks * block_size, n_kv_heads, head_dim) — a flat slot axis, so a token's
slot is `block * block_size + offset` and writes/reads are single index ops per layer.
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
    ) -> None:
        if n_blocks < 1 or block_size < 1:
            raise ValueError(f"n_blocks and block_size must be >= 1, got {n_blocks}, {block_size}")
        self.block_size, self.n_blocks = block_size, n_blocks
        shape = (cfg.n_layers, n_blocks * block_size, cfg.n_kv_heads, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self._free = list(range(n_blocks - 1, -1, -1))  # a stack: lowest block ids first
        self.tables: dict[int, list[int]] = {}

    @staticmethod
    def bytes_per_block(cfg: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
        elem = torch.tensor([], dtype=dtype).element_size()
        return 2 * cfg.n_layers * block_size * cfg.n_kv_heads * cfg.head_dim * elem

    @classmethod
    def from_budget(
        cls,
        cfg: ModelConfig,
        memory_bytes: int,
        block_size: int = 16,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> PagedKVCache:
        """As many blocks as fit in `memory_bytes`."""
        n = memory_bytes // cls.bytes_per_block(cfg, block_size, dtype)
        if n < 1:
            raise ValueError(f"KV budget of {memory_bytes} bytes holds no block; raise it")
        return cls(cfg, int(n), block_size, device, dtype)

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
        table.extend(self._free.pop() for _ in range(need))

    def release(self, seq_id: int) -> None:
        """Return a sequence's blocks to the pool."""
        self._free.extend(reversed(self.tables.pop(seq_id, [])))

    def slots(self, seq_id: int, start: int, n: int) -> Tensor:
        """Flat slot indices of token positions [start, start + n) of `seq_id` (int64, on the cache's device)."""
        table = torch.tensor(self.tables[seq_id], dtype=torch.int64)
        pos = torch.arange(start, start + n)
        slots = table[pos // self.block_size] * self.block_size + pos % self.block_size
        return slots.to(self.k.device)
