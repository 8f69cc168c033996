"""One readable Llama-family decoder (Llama, Qwen2, Mistral layouts), in the spirit of gpt-fast.

Tokens flow flattened: a step's tokens from every sequence are one (T,) tensor with their positions,
so prefill chunks and decode tokens of many sequences share each matmul. Attention itself is a
pluggable backend (`AttentionBackend`): dense causal attention for whole sequences here, paged
attention over the KV cache in `joulepath.engine`. Projections are fused at load time (q|k|v into
`wqkv`, gate|up into `w13`) so a decode step streams each weight matrix once in a single GEMV.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from joulepath.model.config import ModelConfig


class AttentionBackend(Protocol):
    """Computes attention for one layer over the step's tokens.

    q: (T, n_heads, head_dim); k, v: (T, n_kv_heads, head_dim), already rotated. Returns (T, n_heads, head_dim).
    The backend owns where keys and values live (nowhere, a contiguous cache, or paged blocks)."""

    def __call__(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor: ...


class Linear(nn.Module):
    """y = x @ weight (+ bias), with weight stored (in_features, out_features).

    The transpose of nn.Linear's layout: on CPU the small-M GEMMs of decoding run up to 1.6x faster
    with it (measured on this project's 2-core VM: 16 x 896 by 896 x 151,936 in 43 ms vs 68 ms), and
    CUDA's GEMMs do not mind. Checkpoints are converted once at load time."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if self.bias is None:
            return x @ self.weight
        return torch.addmm(self.bias, x, self.weight)


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019), computed in fp32 as the reference does."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_inv_freq(cfg: ModelConfig) -> Tensor:
    """RoPE inverse frequencies (head_dim/2,), with Llama-3 scaling when configured (Su et al. 2021)."""
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float64) / cfg.head_dim))
    s = cfg.rope_scaling
    if s is None:
        return inv.float()
    wavelen = 2 * math.pi / inv
    low_wavelen = s.original_max_position / s.low_freq_factor
    high_wavelen = s.original_max_position / s.high_freq_factor
    scaled = torch.where(wavelen > low_wavelen, inv / s.factor, inv)
    smooth = (s.original_max_position / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, smoothed, scaled).float()


class RotaryModule(nn.Module):
    """A module that owns RoPE inverse frequencies (`inv_freq`, from `rope_cfg`) and keeps them in fp32 whatever
    dtype its weights are cast to: positions x frequencies in bf16 keep only ~535 distinct positions below
    1,200 and turn the angles several radians wrong there (measured), so a bf16 model would see the wrong
    positions in long prompts. The cos/sin tables are computed in fp32 and cast to the activations' dtype."""

    rope_cfg: ModelConfig
    inv_freq: Tensor

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> RotaryModule:
        super()._apply(fn, recurse)
        self.inv_freq = rope_inv_freq(self.rope_cfg).to(self.inv_freq.device)  # recomputed: a bf16 copy lost bits
        return self

    def rope(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """cos, sin (T, 1, D/2) in `dtype` for positions (T,)."""
        freqs = positions.float()[:, None] * self.inv_freq[None, :]  # (T, D/2) in fp32
        return freqs.cos()[:, None, :].to(dtype), freqs.sin()[:, None, :].to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate-half RoPE as Hugging Face checkpoints expect. x: (T, H, D); cos, sin: (T, 1, D/2)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.cfg, self.layer = cfg, layer
        self.wqkv = Linear(cfg.d_model, cfg.qkv_dim, bias=cfg.qkv_bias)
        self.wo = Linear(cfg.n_heads * cfg.head_dim, cfg.d_model)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, attend: AttentionBackend) -> Tensor:
        cfg = self.cfg
        t = x.shape[0]
        q_dim, kv_dim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        q, k, v = self.wqkv(x).split([q_dim, kv_dim, kv_dim], dim=-1)  # (T, q_dim), (T, kv_dim) x 2
        q = apply_rope(q.view(t, cfg.n_heads, cfg.head_dim), cos, sin)  # (T, H, D)
        k = apply_rope(k.view(t, cfg.n_kv_heads, cfg.head_dim), cos, sin)  # (T, KV, D)
        out = attend(self.layer, q, k, v.view(t, cfg.n_kv_heads, cfg.head_dim))  # (T, H, D)
        return self.wo(out.reshape(t, q_dim))


class MLP(nn.Module):
    """SwiGLU feed-forward (Shazeer 2020): down(silu(gate(x)) * up(x)), gate|up fused in w13."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.w13 = Linear(cfg.d_model, 2 * cfg.d_ff)
        self.w2 = Linear(cfg.d_ff, cfg.d_model)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.d_model, cfg.rms_norm_eps)
        self.attention = Attention(cfg, layer)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.rms_norm_eps)
        self.feed_forward = MLP(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, attend: AttentionBackend) -> Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, attend)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(RotaryModule):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = self.rope_cfg = cfg
        # Tied models keep one (d_model, vocab) table: the LM head's layout; embedding reads its columns.
        self.tok_embeddings = None if cfg.tie_embeddings else nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.rms_norm_eps)
        self.output = Linear(cfg.d_model, cfg.vocab_size)
        self.inv_freq: Tensor
        self.register_buffer("inv_freq", rope_inv_freq(cfg), persistent=False)

    def forward(
        self,
        tokens: Tensor,
        positions: Tensor,
        attend: AttentionBackend,
        logit_rows: Tensor | None = None,
        return_hidden: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """tokens, positions: (T,). Returns logits (R, vocab) for `logit_rows` (default: every token), and with
        `return_hidden` also the final normed hidden states (R, d_model) of the same rows (what multi-token
        heads read)."""
        x = self.trunk(tokens, positions, attend)
        if logit_rows is not None:
            x = x[logit_rows]  # only the rows that sample: skips most of the LM head in prefill
        hidden = self.norm(x)
        logits = self.output(hidden)
        return (logits, hidden) if return_hidden else logits

    def trunk(self, tokens: Tensor, positions: Tensor, attend: AttentionBackend) -> Tensor:
        """The last block's hidden states (T, d_model), before the final norm: what multi-token heads read."""
        x = self.embed(tokens)  # (T, d_model)
        cos, sin = self.rope(positions, x.dtype)  # (T, 1, D/2)
        for block in self.layers:
            x = block(x, cos, sin, attend)
        return x

    def embed(self, tokens: Tensor) -> Tensor:
        """Token embeddings (T, d_model)."""
        if self.tok_embeddings is None:
            # Columns of the tied (d, vocab) table, made contiguous: on the transposed view torch reduces a row's
            # RMSNorm across rows, so its bits would depend on how many tokens the step has (measured).
            return self.output.weight.index_select(1, tokens).t().contiguous()
        return self.tok_embeddings(tokens)


class DenseCausalAttention:
    """Attention over whole sequences with no cache: the reference path, and training's.

    `seq_lens` splits the step's tokens into sequences; each attends causally to itself (and, with a
    sliding window, only to its last `window` positions). Sequences are padded into one batch so a
    layer costs a single SDPA call; padded query rows see key 0 only (never an all-masked row, whose
    softmax would be NaN) and are dropped on the way out."""

    def __init__(self, seq_lens: list[int], window: int | None = None) -> None:
        self.seq_lens, self.window = seq_lens, window
        self._plan: tuple[Tensor, Tensor, Tensor] | None = None

    def _build(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        longest = max(self.seq_lens)
        offsets = torch.tensor([0, *self.seq_lens[:-1]]).cumsum(0)
        pos = torch.arange(longest)
        valid = pos[None, :] < torch.tensor(self.seq_lens)[:, None]  # (B, L)
        gather = torch.where(valid, offsets[:, None] + pos[None, :], 0)  # (B, L) rows of the flat batch
        mask = causal_mask(longest, longest, 0, self.window, torch.device("cpu"))[None] & valid[:, None, :]
        mask |= (~valid)[:, :, None] & (pos == 0)[None, None, :]  # padded queries: key 0 only
        return gather.to(device), valid.to(device), mask[:, None].to(device)  # mask: (B, 1, L, L)

    def __call__(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if self._plan is None:
            self._plan = self._build(q.device)
        gather, valid, mask = self._plan
        qs, ks, vs = (x[gather].transpose(1, 2) for x in (q, k, v))  # (B, heads, L, D)
        out = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, enable_gqa=True)
        return out.transpose(1, 2)[valid]  # (T, H, D) in the step's token order


class PaddedBatchAttention:
    """Causal attention over a (batch, length) block of right-padded sequences: training's fast path.

    The step's tokens are `batch` rows of `length` positions, flattened row by row. With right padding
    a causal mask never lets a real token see a pad (pads come after it), so one `is_causal` SDPA call
    (the fused kernel, no explicit mask) is exact for every real position; pad rows are ignored by the
    loss."""

    def __init__(self, batch: int, length: int) -> None:
        self.batch, self.length = batch, length

    def __call__(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, n = self.batch, self.length
        qs, ks, vs = (x.view(b, n, x.shape[1], x.shape[2]).transpose(1, 2) for x in (q, k, v))
        if ks.shape[1] != qs.shape[1]:  # grouped-query heads: the fused CPU kernel wants them expanded
            reps = qs.shape[1] // ks.shape[1]
            ks, vs = ks.repeat_interleave(reps, dim=1), vs.repeat_interleave(reps, dim=1)
        out = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True)
        return out.transpose(1, 2).reshape(b * n, qs.shape[1], qs.shape[3])


class DocumentAttention:
    """Causal attention inside documents packed back to back into fixed-length rows: training's path.

    The step's tokens are `segments.shape[0]` rows of `segments.shape[1]` positions, flattened row by
    row; `segments` (B, L) numbers the document each position belongs to (padding is a document of its
    own). A query sees the keys of its own document at or before it, so packing never leaks one
    example into another. On CUDA the mask is a FlexAttention block mask (blocks no document spans are
    skipped, so short documents cost little); elsewhere one SDPA call takes it as a dense boolean mask.
    Every query sees at least itself, so no softmax row is empty."""

    def __init__(self, segments: Tensor, use_flex: bool | None = None) -> None:
        self.segments = segments
        self.use_flex = segments.is_cuda if use_flex is None else use_flex
        b, n = segments.shape
        if self.use_flex:
            from torch.nn.attention.flex_attention import create_block_mask

            def same_document_causal(b_: Tensor, h_: Tensor, q: Tensor, kv: Tensor) -> Tensor:
                return (segments[b_, q] == segments[b_, kv]) & (q >= kv)

            self.block_mask = create_block_mask(same_document_causal, b, None, n, n, device=segments.device)
        else:
            causal = torch.ones(n, n, dtype=torch.bool, device=segments.device).tril()
            self.dense_mask = ((segments[:, :, None] == segments[:, None, :]) & causal)[:, None]  # (B, 1, L, L)

    def __call__(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, n = self.segments.shape
        qs, ks, vs = (x.view(b, n, x.shape[1], x.shape[2]).transpose(1, 2) for x in (q, k, v))  # (B, heads, L, D)
        if self.use_flex:
            out = compiled_flex_attention()(qs, ks, vs, block_mask=self.block_mask, enable_gqa=True)
        else:
            if ks.shape[1] != qs.shape[1]:  # grouped-query heads: the fused CPU kernel wants them expanded
                reps = qs.shape[1] // ks.shape[1]
                ks, vs = ks.repeat_interleave(reps, dim=1), vs.repeat_interleave(reps, dim=1)
            out = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=self.dense_mask)
        return out.transpose(1, 2).reshape(b * n, qs.shape[1], qs.shape[3])  # (T, H, D)


_FLEX: list[Any] = []


def compiled_flex_attention() -> Any:
    """FlexAttention compiled once per process (uncompiled it materialises the full score matrix)."""
    if not _FLEX:
        from torch.nn.attention.flex_attention import flex_attention

        _FLEX.append(torch.compile(flex_attention, dynamic=False))
    return _FLEX[0]


def causal_mask(n_q: int, n_k: int, q_start: int, window: int | None, device: torch.device) -> Tensor:
    """Boolean (n_q, n_k) mask: query i (at absolute position q_start + i) sees keys j <= its position,
    and with a sliding window only keys j > position - window."""
    q_pos = torch.arange(q_start, q_start + n_q, device=device)[:, None]
    k_pos = torch.arange(n_k, device=device)[None, :]
    mask = k_pos <= q_pos
    if window:
        mask &= k_pos > q_pos - window
    return mask
