"""A feature-level draft head shipped beside a model (EAGLE-1 style, Li et al. 2024; DeepSeek-V3's MTP module
has the same shape): one transformer block that reads the target's own final hidden states.

At position i it takes the target's final normed hidden state f_i and the embedding of the token after it,
x_{i+1}, mixes them (`fc`: 2d -> d), runs one Llama block (with its own attention over the earlier
positions' inputs) and predicts f_{i+1}; the target's own, frozen LM head turns that into a guess of
x_{i+2}. Drafting chains it: the predicted feature and the guessed token are the next position's input.

Unlike Medusa heads, which guess every future token from one hidden state, the block attends: it can copy
from the prompt (a lookup's value) through the target's features of the prompt, and it sees each token it
guessed. Stored as `eagle_draft.safetensors` + `eagle_config.json` in the model's Hugging Face folder; a
plain Hugging Face loader reads neither.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from joulepath.model.transformer import AttentionBackend, Block, Linear, RMSNorm, RotaryModule, rope_inv_freq

if TYPE_CHECKING:
    from joulepath.model.config import ModelConfig

EAGLE_FILE = "eagle_draft.safetensors"
EAGLE_CONFIG = "eagle_config.json"


@dataclass(frozen=True)
class EagleConfig:
    """The draft block's shape (the target's width, its own heads and MLP) and what it was trained for."""

    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    vocab_size: int  # the target's (the LM head is the target's)
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position: int = 2048
    kind: str = "eagle-1"

    @classmethod
    def for_target(cls, target: ModelConfig) -> EagleConfig:
        return cls(target.d_model, target.n_heads, target.n_kv_heads, target.head_dim, target.d_ff,
                   target.vocab_size, target.rms_norm_eps, target.rope_theta, target.max_position)  # fmt: skip

    def block_config(self, target: ModelConfig) -> ModelConfig:
        """A one-layer model config with the block's shape: what Block and the paged KV cache read."""
        return replace(
            target, d_model=self.d_model, n_layers=1, n_heads=self.n_heads, n_kv_heads=self.n_kv_heads,
            head_dim=self.head_dim, d_ff=self.d_ff, rms_norm_eps=self.rms_norm_eps, rope_theta=self.rope_theta,
            max_position=self.max_position, rope_scaling=None, sliding_window=None,
        )  # fmt: skip


class EagleDraft(RotaryModule):
    def __init__(self, cfg: EagleConfig, target: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.block_cfg = self.rope_cfg = cfg.block_config(target)
        self.in_norm = RMSNorm(cfg.d_model, cfg.rms_norm_eps)  # the token embedding's scale differs from f's
        self.fc = Linear(2 * cfg.d_model, cfg.d_model)
        self.block = Block(self.block_cfg, 0)
        self.out_norm = RMSNorm(cfg.d_model, cfg.rms_norm_eps)
        self.inv_freq: Tensor
        self.register_buffer("inv_freq", rope_inv_freq(self.block_cfg), persistent=False)
        nn.init.normal_(self.fc.weight, std=0.02)
        for p in self.block.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, features: Tensor, next_embeds: Tensor, positions: Tensor, attend: AttentionBackend) -> Tensor:
        """features (T, d): the target's f_i; next_embeds (T, d): embeddings of x_{i+1}; positions (T,) = i.
        Returns predicted f_{i+1} (T, d) in the target's final-hidden space (its LM head reads it)."""
        x = self.fc(torch.cat([self.in_norm(next_embeds), features], dim=-1))
        cos, sin = self.rope(positions, x.dtype)
        return self.out_norm(self.block(x, cos, sin, attend))


def save_eagle(draft: EagleDraft, folder: Path) -> None:
    tensors = {k: v.detach().to("cpu", torch.bfloat16).contiguous() for k, v in draft.state_dict().items()}
    save_file(tensors, str(folder / EAGLE_FILE))
    (folder / EAGLE_CONFIG).write_text(json.dumps(asdict(draft.cfg), indent=2) + "\n", encoding="utf-8")


def load_eagle(folder: Path, target: ModelConfig, device: str | torch.device = "cpu") -> EagleDraft | None:
    """The draft block shipped in a model folder, or None when it has none; a block made for another
    model (width or vocabulary) is refused with the reason."""
    if not (folder / EAGLE_FILE).is_file() or not (folder / EAGLE_CONFIG).is_file():
        return None
    cfg = EagleConfig(**json.loads((folder / EAGLE_CONFIG).read_text(encoding="utf-8")))
    if cfg.d_model != target.d_model or cfg.vocab_size != target.vocab_size:
        raise ValueError(
            f"{folder / EAGLE_CONFIG}: the draft block is for width {cfg.d_model} / vocabulary {cfg.vocab_size}, "
            f"this model has {target.d_model} / {target.vocab_size}; retrain it (benchmarks/mtp_distill.py --write)"
        )
    draft = EagleDraft(cfg, target)
    draft.load_state_dict({k: v.float() for k, v in load_file(str(folder / EAGLE_FILE)).items()})
    return draft.to(device).eval()
