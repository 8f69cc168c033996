"""The model runner: turns the scheduler's chunks into one forward pass over paged KV, and the static
batch-1 decode path (contiguous cache, fixed shapes) that `torch.compile` can capture.

Attention goes through `torch.nn.functional.scaled_dot_product_attention`, so FlashAttention /
memory-efficient kernels run where the device has them, or, with `row_invariant`, through joulepath's own
row-invariant kernel (`engine/row_attention.py`: fp32 CPU; every token's output independent of the step's
shape, which greedy speculative decoding needs to be token-identical).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from joulepath.engine import row_attention
from joulepath.engine.kv_cache import PagedKVCache
from joulepath.engine.scheduler import ScheduledChunk
from joulepath.engine.scopes import scope
from joulepath.model.transformer import Transformer, causal_mask


class PagedAttention:
    """AttentionBackend over a PagedKVCache for one step's chunks (prefill chunks and decode tokens).

    Everything that does not depend on the layer (slots, padding, masks) is built once per step:
    decode tokens share one batched SDPA over keys padded to the longest context; each verify chunk (a
    token and its drafts) gets one in the same one-query-per-row form over its keys gathered once; each
    prefill chunk gets its own SDPA with a causal mask offset by the context already cached.

    `row_invariant`: every row of every chunk goes through one call of the row-invariant kernel instead
    (`row_attention.RowPlan`, built once per step), each over exactly the keys it sees."""

    def __init__(
        self, cache: PagedKVCache, chunks: list[ScheduledChunk], window: int | None, row_invariant: bool = False
    ) -> None:
        self.cache = cache
        device = cache.k.device
        seen = [cache.slots(c.seq.seq_id, 0, c.span_end) for c in chunks]  # each chunk's keys, position 0 on
        self.write_slots = torch.cat([sl[c.start :] for sl, c in zip(seen, chunks, strict=True)])
        offsets = torch.tensor([0] + [len(c.tokens) for c in chunks]).cumsum(0).tolist()
        self.rows: row_attention.RowPlan | None = None
        if row_invariant:
            spans = [(seen[i], offsets[i], c.start, len(c.tokens)) for i, c in enumerate(chunks)]
            self.rows = row_attention.RowPlan.build(spans, window)
            return
        # Decode tokens are rows of one batched SDPA over keys padded to the longest context. A verify chunk
        # (a token plus its drafts) gets a batched SDPA of its own in the same form, one query row per token,
        # row j seeing the keys up to its own position: its keys are gathered once and expanded (a view), not
        # copied per row (at 1,100 tokens of context, 4 drafts cost 31 ms a step with one gathered copy per
        # row and about 11 ms this way on jp-large). Prefill chunks get an SDPA each with a causal mask.
        rows = [(offsets[i], i, c.start + 1) for i, c in enumerate(chunks) if len(c.tokens) == 1]
        self.decode_rows = torch.tensor([r for r, _, _ in rows], dtype=torch.int64, device=device)
        self.verify = [
            (offsets[i], len(c.tokens), seen[i], _row_masks(c, window, device))
            for i, c in enumerate(chunks)
            if c.draft_tokens
        ]
        self.prefill = [
            (
                offsets[i],
                len(c.tokens),
                seen[i],
                causal_mask(len(c.tokens), c.span_end, c.start, window, device),
            )
            for i, c in enumerate(chunks)
            if len(c.tokens) > 1 and not c.draft_tokens
        ]
        if rows:
            longest = max(n for _, _, n in rows)
            self.padded = torch.zeros(len(rows), longest, dtype=torch.int64, device=device)  # (B, L)
            self.pad_mask = torch.zeros(len(rows), 1, 1, longest, dtype=torch.bool, device=device)  # (B, 1, 1, L)
            for row, (_, i, n) in enumerate(rows):
                self.padded[row, :n] = seen[i]  # a decode chunk's span ends at n
                self.pad_mask[row, 0, 0, max(0, n - window) if window else 0 : n] = True

    def __call__(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        with scope("kv_cache.write"):
            self.cache.write(layer, self.write_slots, k, v)
        with scope("attention.kernel"):
            return self._attend(layer, q)

    def _attend(self, layer: int, q: Tensor) -> Tensor:
        if self.rows is not None:
            return row_attention.attend(q, self.cache.k[layer], self.cache.v[layer], self.rows)
        out = torch.empty_like(q)  # (T, H, D)
        if len(self.decode_rows):
            ks, vs = (x.transpose(1, 2) for x in self.cache.gather(layer, self.padded))  # (B, KV, L, D)
            qs = q[self.decode_rows][:, :, None, :]  # (B, H, 1, D)
            dec = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=self.pad_mask, enable_gqa=True)
            out[self.decode_rows] = dec[:, :, 0, :]
        for offset, n, slots, mask in self.verify:
            ks, vs = (x.transpose(0, 1)[None].expand(n, -1, -1, -1) for x in self.cache.gather(layer, slots))
            qs = q[offset : offset + n][:, :, None, :]  # (n, H, 1, D): one query per row, as decode rows
            ver = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, enable_gqa=True)
            out[offset : offset + n] = ver[:, :, 0, :]
        for offset, n, slots, mask in self.prefill:
            qs = q[offset : offset + n].transpose(0, 1)[None]  # (1, H, n, D)
            ks, vs = (x.transpose(0, 1)[None] for x in self.cache.gather(layer, slots))  # (1, KV, end, D)
            pre = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, enable_gqa=True)
            out[offset : offset + n] = pre[0].transpose(0, 1)
        return out


def _row_masks(chunk: ScheduledChunk, window: int | None, device: torch.device) -> Tensor:
    """(n, 1, 1, span_end) key masks of a verify chunk's n rows: row j sees positions up to start + j (and, with
    a sliding window, only its last `window`)."""
    n, end = len(chunk.tokens), chunk.span_end
    mask = torch.zeros(n, 1, 1, end, dtype=torch.bool, device=device)
    for j in range(n):
        upto = chunk.start + j + 1
        mask[j, 0, 0, max(0, upto - window) if window else 0 : upto] = True
    return mask


@torch.inference_mode()
def run_step(
    model: Transformer, cache: PagedKVCache, chunks: list[ScheduledChunk], row_invariant: bool = False
) -> Tensor:
    """Forward one step; returns logits (rows, vocab) for each chunk that samples, in batch order: one row
    at its last token, or, with drafts, one row at its last known token and one at each draft. Every
    chunk's keys and values (drafts' too) land in the cache. `row_invariant`: see `PagedAttention`."""
    return run_step_hidden(model, cache, chunks, row_invariant)[0]


@torch.inference_mode()
def run_step_hidden(
    model: Transformer, cache: PagedKVCache, chunks: list[ScheduledChunk], row_invariant: bool = False
) -> tuple[Tensor, Tensor]:
    """`run_step`, also returning the final normed hidden states of the same rows (multi-token heads read them)."""
    tokens, positions, rows, attend = _plan(cache, chunks, model.cfg.sliding_window, row_invariant)
    with scope("model.forward"):
        logits, hidden = model(tokens, positions, attend, logit_rows=rows, return_hidden=True)
        return logits, hidden


@torch.inference_mode()
def run_step_features(
    model: Transformer, cache: PagedKVCache, chunks: list[ScheduledChunk], row_invariant: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """`run_step_hidden`, also returning the final normed hidden state of *every* token computed (T, d):
    what a feature-level draft block (model/eagle.py) reads, prompt positions included."""
    tokens, positions, rows, attend = _plan(cache, chunks, model.cfg.sliding_window, row_invariant)
    with scope("model.forward"):
        every = model.norm(model.trunk(tokens, positions, attend))
        hidden = every[rows]
        return model.output(hidden), hidden, every


def _plan(
    cache: PagedKVCache, chunks: list[ScheduledChunk], window: int | None, row_invariant: bool = False
) -> tuple[Tensor, Tensor, Tensor, PagedAttention]:
    """Token ids, positions, the rows that need logits, and the attention backend of one step."""
    device = cache.k.device
    with scope("kv_cache.plan"):
        tokens = torch.tensor([t for c in chunks for t in c.tokens], device=device)
        positions = torch.cat([torch.arange(c.start, c.span_end) for c in chunks]).to(device)
        ends = (torch.tensor([len(c.tokens) for c in chunks]).cumsum(0) - 1).tolist()
        picked = [r for c, end in zip(chunks, ends, strict=True) if c.samples for r in logit_rows(c, end)]
        rows = torch.tensor(picked, dtype=torch.int64, device=device)
        return tokens, positions, rows, PagedAttention(cache, chunks, window, row_invariant)


def logit_rows(chunk: ScheduledChunk, last_row: int) -> range:
    """Rows of the step's tokens that a sampling chunk needs logits for: its last known token and its drafts."""
    n = len(chunk.draft_tokens) + 1
    return range(last_row - n + 1, last_row + 1)


class StaticCacheAttention:
    """Attention over a contiguous cache of fixed length `max_len` for `batch` sequences that share their
    positions (gpt-fast style; batch 1 is the latency path, a batch of equal-length prompts the benchmark's
    batched path): the write position and the visibility mask are tensors, so every decode step has the
    same shapes. A step's tokens are `batch` rows of the same positions, flattened row by row."""

    def __init__(self, model: Transformer, max_len: int, batch: int = 1) -> None:
        cfg = model.cfg
        p = next(model.parameters())
        shape = (cfg.n_layers, batch, cfg.n_kv_heads, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, device=p.device, dtype=p.dtype)
        self.v = torch.zeros(shape, device=p.device, dtype=p.dtype)
        # The cache is mutated in place at fixed addresses: telling dynamo so lets CUDA graphs capture it.
        torch._dynamo.mark_static_address(self.k)
        torch._dynamo.mark_static_address(self.v)
        self.max_len, self.window, self.batch = max_len, cfg.sliding_window, batch
        self.positions = torch.zeros(1, dtype=torch.int64, device=p.device)
        self.mask = torch.zeros(1, 1, 1, max_len, dtype=torch.bool, device=p.device)

    def set_positions(self, positions: Tensor) -> None:
        """Where this call's tokens go in every sequence (T,), and what they may see (causal within the call)."""
        self.positions = positions
        k_pos = torch.arange(self.max_len, device=positions.device)[None, :]
        mask = k_pos <= positions[:, None]
        if self.window:
            mask &= k_pos > positions[:, None] - self.window
        self.mask = mask[None, None]  # (1, 1, T, max_len)

    def __call__(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b = self.batch
        qs, ks, vs = (x.view(b, -1, x.shape[1], x.shape[2]).transpose(1, 2) for x in (q, k, v))  # (B, heads, T, D)
        self.k[layer].index_copy_(2, self.positions, ks)  # (B, KV, max_len, D)
        self.v[layer].index_copy_(2, self.positions, vs)
        out = F.scaled_dot_product_attention(qs, self.k[layer], self.v[layer], attn_mask=self.mask, enable_gqa=True)
        return out.transpose(1, 2).reshape(q.shape)  # (B x T, H, D)


def decode_one_token(model: Transformer, attend: StaticCacheAttention, token: Tensor, position: Tensor) -> Tensor:
    """The hot function of batch-1 decoding: fixed shapes, no Python-side branching on values.
    token, position: (1,). Returns logits (1, vocab)."""
    attend.set_positions(position)
    return model(token, position, attend)
