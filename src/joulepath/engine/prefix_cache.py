"""Prefix cache: full KV blocks reused across requests that share a token prefix (vLLM's automatic prefix
caching; SGLang's RadixAttention, Zheng et al. 2024).

A full block is keyed by a hash chained from its parent's: `h_i = hash((h_{i-1}, tokens of block i))`, so
equal blocks at different positions (or after different prefixes) never share a key. The chain starts at
a root hash over everything that changes the KV of the same tokens: model, KV dtype, block size and a
per-request salt (a tenant's). Each node keeps its parent hash and tokens, so a 64-bit hash collision is
a miss, never a wrong hit.

Blocks are shared through the KV cache's reference counts: the prefix cache holds one reference per
cached block, each sequence using it another. A cached block no sequence holds (count 1) is evictable;
eviction is least-recently-released first, and a sequence's chain is released leaf first, so leaves go
before their parents (vLLM v1's free-queue order). A descendant orphaned by evicting its parent (only
when two sequences computed the same block at once) is unreachable and ages out the same way.

With offload tiers (`engine/kv_offload.py`), an evicted block goes down a tier instead of vanishing; a
match continues past the pool into the tiers (`match_offloaded`), and admission copies those blocks back
(`fetch`, `restore`) where that is cheaper than recomputing them.

Data flow: Scheduler admission -> `match` (cached blocks for a sequence's known tokens) [-> `match_offloaded`]
-> `attach` (share them, skip their prefill) [-> `fetch` -> `restore`] ... runner writes KV -> `insert`
(newly full blocks become cached) -> `release` (a finished or preempted sequence's cached blocks become
evictable) -> `evict` (least recently released first; down a tier when there is one).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from torch import Tensor

from joulepath.engine.kv_cache import PagedKVCache
from joulepath.engine.kv_offload import KVOffload, StoredBlock


@dataclass(frozen=True)
class _Node:
    block: int  # the KV cache block holding this node's tokens
    parent: int  # parent's hash (the root hash for a first block)
    tokens: tuple[int, ...]


@dataclass
class PrefixState:
    """Per-sequence prefix-cache state (kept across preemption: hashes depend only on the tokens)."""

    salt: str = ""
    hashes: list[int] = field(default_factory=list)  # chained hashes of the sequence's full blocks so far


class PrefixCache:
    """Cached full blocks keyed by chained hash, with LRU eviction of unreferenced ones."""

    def __init__(self, cache: PagedKVCache, model_key: str, offload: KVOffload | None = None) -> None:
        self.cache, self.model_key, self.offload = cache, model_key, offload
        self.restored_blocks = 0  # blocks copied back from an offload tier
        self.evicted_blocks = 0  # blocks that left the pool (to an offload tier, or gone)
        self.declined_blocks = 0  # offloaded blocks a hit could have used, recomputed because that was cheaper
        self._nodes: dict[int, _Node] = {}
        self._evictable: OrderedDict[int, None] = OrderedDict()  # hashes, least recently released first

    def root_hash(self, salt: str = "") -> int:
        """The chain's start: model identity, KV dtype, block size and the salt all change it."""
        return hash(("joulepath.prefix_cache", self.model_key, str(self.cache.k.dtype), self.cache.block_size, salt))

    @staticmethod
    def chain(parent: int, tokens: tuple[int, ...]) -> int:
        return hash((parent, tokens))

    def block_hashes(self, state: PrefixState, ids: list[int], n_blocks: int) -> list[int]:
        """Chained hashes of the first `n_blocks` full blocks of `ids` (memoised in `state`)."""
        bs = self.cache.block_size
        hashes = state.hashes
        parent = hashes[-1] if hashes else self.root_hash(state.salt)
        for i in range(len(hashes), n_blocks):
            parent = self.chain(parent, tuple(ids[i * bs : (i + 1) * bs]))
            hashes.append(parent)
        return hashes[:n_blocks]

    @property
    def cached_blocks(self) -> int:
        return len(self._nodes)

    @property
    def evictable_blocks(self) -> int:
        return len(self._evictable)

    def match(self, state: PrefixState, ids: list[int]) -> list[int]:
        """Cached blocks holding the longest prefix of `ids`, leaving at least one token to compute
        (its logits are what the request samples from): a fully cached prompt recomputes its last block."""
        bs = self.cache.block_size
        blocks: list[int] = []
        parent = self.root_hash(state.salt)
        for i, h in enumerate(self.block_hashes(state, ids, (len(ids) - 1) // bs)):
            node = self._nodes.get(h)
            if node is None or node.parent != parent or node.tokens != tuple(ids[i * bs : (i + 1) * bs]):
                break
            blocks.append(node.block)
            parent = h
        return blocks

    def match_offloaded(self, state: PrefixState, ids: list[int], n_pool: int) -> tuple[list[int], int]:
        """Continue a match of `n_pool` pool blocks into the offload tiers: the hashes of the blocks worth
        copying back (in order), and how many more offloaded blocks follow that recomputing is cheaper for."""
        if self.offload is None:
            return [], 0
        bs = self.cache.block_size
        hashes = self.block_hashes(state, ids, (len(ids) - 1) // bs)
        worth: list[int] = []
        declined = 0
        for i in range(n_pool, len(hashes)):
            parent = hashes[i - 1] if i else self.root_hash(state.salt)
            tier = self.offload.tier_of(hashes[i], parent, tuple(ids[i * bs : (i + 1) * bs]))
            if tier is None:
                break
            if declined or not self.offload.worth_restoring(tier):
                declined += 1  # once one block is recomputed, the blocks after it are too (causal KV)
            else:
                worth.append(hashes[i])
        return worth, declined

    def count_modelled(self, state: PrefixState, ids: list[int], n_pool: int) -> None:
        """At admission: the blocks after a pool hit of `n_pool` blocks that a modelled tier would serve."""
        if self.offload is not None and self.offload.modelled.capacity_blocks:
            hashes = self.block_hashes(state, ids, (len(ids) - 1) // self.cache.block_size)
            self.offload.modelled.serve(hashes[n_pool:])

    def fetch(self, hashes: list[int]) -> list[tuple[int, StoredBlock, Tensor]]:
        """Take offloaded blocks out of their tiers (before eviction can push them further down)."""
        assert self.offload is not None
        return [(h, *self.offload.take(h)) for h in hashes]

    def restore(self, seq_id: int, fetched: list[tuple[int, StoredBlock, Tensor]]) -> None:
        """Append fetched blocks to `seq_id`'s table (fresh pool blocks, KV copied back) and cache them again."""
        assert self.offload is not None
        table = self.cache.tables.setdefault(seq_id, [])
        for h, meta, kv in fetched:
            self.cache.reserve(seq_id, (len(table) + 1) * self.cache.block_size)
            self.offload.write(table[-1], kv)
            if h not in self._nodes:
                self._nodes[h] = _Node(table[-1], meta.parent, meta.tokens)
                self.cache.retain([table[-1]])
        self.restored_blocks += len(fetched)

    def evictable_among(self, state: PrefixState, n_blocks: int) -> int:
        """How many of a sequence's first `n_blocks` (matched) blocks are evictable right now."""
        return sum(1 for h in state.hashes[:n_blocks] if h in self._evictable)

    def attach(self, seq_id: int, state: PrefixState, blocks: list[int]) -> None:
        """Start `seq_id`'s block table with matched cached blocks (one more reference each)."""
        for h in state.hashes[: len(blocks)]:
            self._evictable.pop(h, None)
        self.cache.share(seq_id, blocks)

    def insert(self, seq_id: int, state: PrefixState, ids: list[int], start: int, end: int) -> None:
        """Cache the blocks of `seq_id` that became full when positions [start, end) were computed. A block
        whose hash is cached already (another sequence computed it at the same time) stays private."""
        bs = self.cache.block_size
        table = self.cache.tables[seq_id]
        hashes = self.block_hashes(state, ids, end // bs)
        for i in range(start // bs, end // bs):
            if hashes[i] in self._nodes:
                continue
            parent = hashes[i - 1] if i else self.root_hash(state.salt)
            self._nodes[hashes[i]] = _Node(table[i], parent, tuple(ids[i * bs : (i + 1) * bs]))
            self.cache.retain([table[i]])

    def release(self, seq_id: int, state: PrefixState) -> None:
        """Drop `seq_id`'s blocks; its cached blocks nobody else holds become evictable, leaf first."""
        table = list(self.cache.tables.get(seq_id, ()))
        self.cache.release(seq_id)
        for i in range(min(len(table), len(state.hashes)) - 1, -1, -1):
            node = self._nodes.get(state.hashes[i])
            if node is not None and node.block == table[i] and self.cache.refcount(node.block) == 1:
                self._evictable[state.hashes[i]] = None
                self._evictable.move_to_end(state.hashes[i])

    def evict(self, n_blocks: int) -> int:
        """Return up to `n_blocks` least recently released unreferenced blocks to the pool; returns how many."""
        done = 0
        while done < n_blocks and self._evictable:
            h, _ = self._evictable.popitem(last=False)
            node = self._nodes.pop(h)
            self.evicted_blocks += 1
            if self.offload is not None:
                self.offload.offload(h, StoredBlock(node.parent, node.tokens), node.block)
            self.cache.drop([node.block])
            done += 1
        return done

    def clear(self) -> None:
        """Evict every unreferenced block and forget the rest (their sequences still hold them)."""
        self.evict(len(self._evictable))
        for node in self._nodes.values():
            self.cache.drop([node.block])
        self._nodes.clear()
