"""The model layer: one Llama-family transformer, its config and presets, checkpoint I/O, tokenizers."""

from joulepath.model.checkpoint import CheckpointError, LoadedModel, load_model, save_checkpoint
from joulepath.model.config import PRESETS, ConfigError, ModelConfig, from_hf, preset, to_hf
from joulepath.model.tokenizer import ByteTokenizer, JsonTokenizer, Tokenizer
from joulepath.model.transformer import (
    AttentionBackend,
    DenseCausalAttention,
    DocumentAttention,
    PaddedBatchAttention,
    Transformer,
)

__all__ = [
    "PRESETS",
    "AttentionBackend",
    "ByteTokenizer",
    "CheckpointError",
    "ConfigError",
    "DenseCausalAttention",
    "DocumentAttention",
    "JsonTokenizer",
    "LoadedModel",
    "ModelConfig",
    "PaddedBatchAttention",
    "Tokenizer",
    "Transformer",
    "from_hf",
    "load_model",
    "preset",
    "save_checkpoint",
    "to_hf",
]
