"""Multi-token prediction heads (Medusa-1 style, Cai et al. 2024) shipped beside a model's weights.

Head k (k = 1..K) reads the model's final normed hidden state at position t and guesses the token at
t + 1 + k through a residual SiLU block and the model's own (shared, frozen) LM head:

    logits_k = lm_head(h + silu(h @ W_k))        W_k: (d_model, d_model), zero at start

so an untrained head predicts what the base model predicts. Heads are trained on the frozen trunk's
hidden states (detached), so they cannot cost the base model accuracy. They are stored as
`mtp_heads.safetensors` + `mtp_config.json` in the model's Hugging Face folder: a plain Hugging Face
loader reads only `model.safetensors` and ignores both. A speculative decoder proposes the K guesses
and verifies them as a chain in one forward pass of the base model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from joulepath.model.transformer import Transformer

HEADS_FILE = "mtp_heads.safetensors"
CONFIG_FILE = "mtp_config.json"


@dataclass(frozen=True)
class MTPConfig:
    """What a speculative decoder needs to know about the heads."""

    n_heads: int
    d_model: int
    kind: str = "medusa-1"  # residual SiLU block per head, LM head shared with the base model
    first_offset: int = 2  # head 1 guesses the token 2 positions after the hidden state's own


class MedusaHeads(nn.Module):
    def __init__(self, cfg: MTPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Parameter(torch.zeros(cfg.n_heads, cfg.d_model, cfg.d_model))  # (K, d, d)

    def hidden(self, h: Tensor) -> Tensor:
        """h: (T, d) final normed hidden states -> (K, T, d) inputs of the shared LM head."""
        return h[None] + F.silu(torch.matmul(h[None], self.proj))

    def logits(self, model: Transformer, h: Tensor) -> Tensor:
        """(K, T, vocab) guesses for tokens t+2 .. t+K+1; the LM head is read, never trained, here."""
        return self.hidden(h) @ model.output.weight.detach()


def save_heads(heads: MedusaHeads, folder: Path) -> None:
    save_file({"proj": heads.proj.detach().to("cpu", torch.bfloat16).contiguous()}, str(folder / HEADS_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps(asdict(heads.cfg), indent=2))


def load_heads(folder: Path, device: str | torch.device = "cpu") -> MedusaHeads | None:
    """The heads shipped in a model folder, or None when it has none."""
    if not (folder / HEADS_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
        return None
    cfg = MTPConfig(**json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")))
    heads = MedusaHeads(cfg)
    heads.load_state_dict({k: v.float() for k, v in load_file(str(folder / HEADS_FILE)).items()})
    return heads.to(device).eval()


def chain_acceptance(hits: list[list[bool]]) -> tuple[int, int]:
    """(tokens emitted, verification forwards) of greedy chain verification over one answer.

    `hits[j][m]` says whether head m+1, reading the hidden state that produced answer token j, guessed
    answer token j+m+1 right. Each forward after the prefill accepts the longest run of right guesses
    and adds the base model's own next token, so it emits run + 1 tokens."""
    n = len(hits)
    j, tokens, forwards = 0, 0, 0
    while j < n - 1:
        run = 0
        while run < len(hits[j]) and j + run + 1 < n and hits[j][run]:
            run += 1
        step = min(run + 1, n - 1 - j)
        tokens, forwards, j = tokens + step, forwards + 1, j + step
    return tokens, forwards
