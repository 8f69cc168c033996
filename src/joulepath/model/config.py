"""Model configuration: one frozen dataclass, named presets as plain data, and the mapping to and
from a Hugging Face `config.json` (Llama, Qwen2 and Mistral layouts; transformers 4 and 5 styles)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "mistral")


class ConfigError(ValueError):
    """A config.json joulepath cannot serve; the message says which key and what is allowed."""


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3-style RoPE frequency scaling (rope_type "llama3")."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position: int


@dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a Llama-family decoder. Field names are ours; `from_hf`/`to_hf` convert."""

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    head_dim: int = 0  # 0: d_model // n_heads
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    qkv_bias: bool = False  # Qwen2
    tie_embeddings: bool = False
    max_position: int = 4096
    sliding_window: int | None = None  # Mistral: attend to the last N positions only
    model_type: str = "llama"
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.head_dim == 0:
            object.__setattr__(self, "head_dim", self.d_model // self.n_heads)
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(f"model_type {self.model_type!r} is not supported; supported: {SUPPORTED_MODEL_TYPES}")

    @property
    def qkv_dim(self) -> int:
        return (self.n_heads + 2 * self.n_kv_heads) * self.head_dim

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


#: Presets as plain data (shapes of public models and tiny ones for tests).
PRESETS: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": dict(
        vocab_size=151936,
        d_model=896,
        n_layers=24,
        n_heads=14,
        n_kv_heads=2,
        d_ff=4864,
        rms_norm_eps=1e-6,
        rope_theta=1_000_000.0,
        qkv_bias=True,
        tie_embeddings=True,
        max_position=32768,
        model_type="qwen2",
        bos_token_id=151643,
        eos_token_ids=(151645, 151643),
    ),
    "llama-3.2-1b": dict(
        vocab_size=128256,
        d_model=2048,
        n_layers=16,
        n_heads=32,
        n_kv_heads=8,
        d_ff=8192,
        head_dim=64,
        rope_theta=500_000.0,
        tie_embeddings=True,
        max_position=131072,
        rope_scaling=RopeScaling(32.0, 1.0, 4.0, 8192),
        bos_token_id=128000,
        eos_token_ids=(128001, 128008, 128009),
    ),
    "tiny-llama": dict(
        vocab_size=256,
        d_model=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        d_ff=128,
        max_position=512,
        bos_token_id=1,
        eos_token_ids=(2,),
    ),
    "tiny-qwen2": dict(
        vocab_size=256,
        d_model=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        d_ff=128,
        qkv_bias=True,
        tie_embeddings=True,
        rms_norm_eps=1e-6,
        max_position=512,
        model_type="qwen2",
        eos_token_ids=(2,),
    ),
    "tiny-mistral": dict(
        vocab_size=256,
        d_model=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=1,
        d_ff=160,
        sliding_window=16,
        max_position=512,
        model_type="mistral",
        bos_token_id=1,
        eos_token_ids=(2,),
    ),
}


def preset(name: str) -> ModelConfig:
    """A named preset; the error lists the names."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return ModelConfig(**PRESETS[name])


def _rope_from_hf(hf: dict[str, Any]) -> tuple[float, RopeScaling | None]:
    params = hf.get("rope_parameters") or {}  # transformers 5
    legacy = hf.get("rope_scaling") or {}  # transformers 4
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    scaling = {**legacy, **params}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind in (None, "default"):
        return theta, None
    if kind != "llama3":
        raise ConfigError(f"rope scaling type {kind!r} is not supported; supported: default, llama3")
    return theta, RopeScaling(
        float(scaling["factor"]),
        float(scaling["low_freq_factor"]),
        float(scaling["high_freq_factor"]),
        int(scaling["original_max_position_embeddings"]),
    )


def from_hf(hf: dict[str, Any]) -> ModelConfig:
    """Build a ModelConfig from a parsed Hugging Face config.json."""
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(f"config.json model_type {model_type!r} is not supported; supported: {SUPPORTED_MODEL_TYPES}")
    try:
        theta, scaling = _rope_from_hf(hf)
        eos = hf.get("eos_token_id")
        sliding = hf.get("sliding_window") if (model_type == "mistral" or hf.get("use_sliding_window")) else None
        return ModelConfig(
            vocab_size=int(hf["vocab_size"]),
            d_model=int(hf["hidden_size"]),
            n_layers=int(hf["num_hidden_layers"]),
            n_heads=int(hf["num_attention_heads"]),
            n_kv_heads=int(hf.get("num_key_value_heads") or hf["num_attention_heads"]),
            d_ff=int(hf["intermediate_size"]),
            head_dim=int(hf.get("head_dim") or 0),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-5)),
            rope_theta=theta,
            rope_scaling=scaling,
            qkv_bias=bool(hf.get("attention_bias", model_type == "qwen2")),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            max_position=int(hf.get("max_position_embeddings", 4096)),
            sliding_window=int(sliding) if sliding else None,
            model_type=model_type,
            bos_token_id=hf.get("bos_token_id"),
            eos_token_ids=tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),)),
        )
    except KeyError as exc:
        raise ConfigError(f"config.json is missing required key {exc.args[0]!r}") from None


def to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """The Hugging Face config.json for `cfg` (transformers 4-compatible keys, read by 5 as well)."""
    arch = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}
    out: dict[str, Any] = {
        "architectures": [arch[cfg.model_type]],
        "model_type": cfg.model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "intermediate_size": cfg.d_ff,
        "head_dim": cfg.head_dim,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": cfg.tie_embeddings,
        "max_position_embeddings": cfg.max_position,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    }
    if cfg.model_type != "qwen2":
        out["attention_bias"] = cfg.qkv_bias
    if cfg.rope_scaling:
        s = cfg.rope_scaling
        out["rope_scaling"] = {
            "rope_type": "llama3",
            "factor": s.factor,
            "low_freq_factor": s.low_freq_factor,
            "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_position,
        }
    if cfg.sliding_window:
        out["sliding_window"] = cfg.sliding_window
        if cfg.model_type == "qwen2":
            out["use_sliding_window"] = True
    if cfg.bos_token_id is not None:
        out["bos_token_id"] = cfg.bos_token_id
    if cfg.eos_token_ids:
        out["eos_token_id"] = list(cfg.eos_token_ids) if len(cfg.eos_token_ids) > 1 else cfg.eos_token_ids[0]
    return out
