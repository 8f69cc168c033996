"""Checkpoint I/O for Hugging Face model folders, and `dummy:<preset>` random models.

A folder holds `config.json`, `model.safetensors` (or shards plus `model.safetensors.index.json`),
optionally `tokenizer.json`, `tokenizer_config.json` (its `chat_template`), `chat_template.jinja` and
`generation_config.json`. Weights are converted once, here: q|k|v and gate|up are fused into our
`wqkv` and `w13`; `save_checkpoint` splits them back. Every refusal names the file and the fix.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jinja2 import Template
from jinja2.sandbox import ImmutableSandboxedEnvironment
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from joulepath.model.config import ConfigError, ModelConfig, from_hf, preset, to_hf
from joulepath.model.tokenizer import ByteTokenizer, JsonTokenizer, Tokenizer
from joulepath.model.transformer import Transformer, rope_inv_freq

INDEX = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says what is wrong and how to fix it."""


@dataclass
class LoadedModel:
    """A model ready to serve, with what came with it."""

    model: Transformer
    config: ModelConfig
    tokenizer: Tokenizer
    source: str  # folder path or "dummy:<preset>"
    generation_config: dict[str, Any] = field(default_factory=dict)
    chat_template: str | None = None

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Render messages with the checkpoint's jinja2 chat template (sandboxed)."""
        if self.chat_template is None:
            raise CheckpointError(f"{self.source} has no chat template; pass a plain prompt instead")
        return _compiled_template(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt, bos_token="", eos_token=""
        )


@functools.lru_cache(maxsize=16)
def _compiled_template(template: str) -> Template:
    """A chat template compiled once (about 1 ms each time otherwise: a server renders one per request)."""
    return ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(template)


def _hf_to_ours(hf: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Rename, fuse and transpose Hugging Face tensors into this model's layout (pops what it uses).
    Linear weights go from (out, in) to (in, out); a tied table becomes the LM head's (d_model, vocab)."""
    embed = hf.pop("model.embed_tokens.weight")
    out = {"norm.weight": hf.pop("model.norm.weight")}
    if cfg.tie_embeddings:
        out["output.weight"] = embed.t()
        hf.pop("lm_head.weight", None)  # some tied checkpoints store it anyway
    else:
        out["tok_embeddings.weight"] = embed
        out["output.weight"] = hf.pop("lm_head.weight").t()
    for i in range(cfg.n_layers):
        p, q = f"model.layers.{i}.", f"layers.{i}."
        qkv = [hf.pop(p + f"self_attn.{n}_proj.weight") for n in "qkv"]
        out[q + "attention.wqkv.weight"] = torch.cat(qkv).t()
        if cfg.qkv_bias:
            out[q + "attention.wqkv.bias"] = torch.cat([hf.pop(p + f"self_attn.{n}_proj.bias") for n in "qkv"])
        out[q + "attention.wo.weight"] = hf.pop(p + "self_attn.o_proj.weight").t()
        gate, up = hf.pop(p + "mlp.gate_proj.weight"), hf.pop(p + "mlp.up_proj.weight")
        out[q + "feed_forward.w13.weight"] = torch.cat([gate, up]).t()
        out[q + "feed_forward.w2.weight"] = hf.pop(p + "mlp.down_proj.weight").t()
        out[q + "attention_norm.weight"] = hf.pop(p + "input_layernorm.weight")
        out[q + "ffn_norm.weight"] = hf.pop(p + "post_attention_layernorm.weight")
    return {k: v.contiguous() for k, v in out.items()}


def _ours_to_hf(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    head = sd["output.weight"].t()  # (vocab, d_model)
    out = {"model.norm.weight": sd["norm.weight"]}
    if cfg.tie_embeddings:
        out["model.embed_tokens.weight"] = head
    else:
        out["model.embed_tokens.weight"] = sd["tok_embeddings.weight"]
        out["lm_head.weight"] = head
    q_dim, kv_dim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    for i in range(cfg.n_layers):
        p, q = f"model.layers.{i}.", f"layers.{i}."
        qkv_w = sd[q + "attention.wqkv.weight"].t().split([q_dim, kv_dim, kv_dim])
        for n, t in zip("qkv", qkv_w, strict=True):
            out[p + f"self_attn.{n}_proj.weight"] = t
        if cfg.qkv_bias:
            for n, t in zip("qkv", sd[q + "attention.wqkv.bias"].split([q_dim, kv_dim, kv_dim]), strict=True):
                out[p + f"self_attn.{n}_proj.bias"] = t
        out[p + "self_attn.o_proj.weight"] = sd[q + "attention.wo.weight"].t()
        gate, up = sd[q + "feed_forward.w13.weight"].t().chunk(2)
        out[p + "mlp.gate_proj.weight"], out[p + "mlp.up_proj.weight"] = gate, up
        out[p + "mlp.down_proj.weight"] = sd[q + "feed_forward.w2.weight"].t()
        out[p + "input_layernorm.weight"] = sd[q + "attention_norm.weight"]
        out[p + "post_attention_layernorm.weight"] = sd[q + "ffn_norm.weight"]
    return {k: v.contiguous() for k, v in out.items()}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read JSON ({exc})") from None


def _read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    index = folder / INDEX
    if index.is_file():
        files = sorted(set(_read_json(index).get("weight_map", {}).values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise CheckpointError(f"{folder}: no model.safetensors or {INDEX}; is this a Hugging Face model folder?")
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path} is listed in {INDEX} but missing; re-download or re-save the checkpoint")
        try:
            tensors.update(load_file(str(path)))
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {exc}") from None
    return tensors


def _check_and_load(model: Transformer, sd: dict[str, torch.Tensor], folder: Path) -> None:
    for key, tensor in model.state_dict().items():
        shape = tensor.shape
        if key not in sd:
            raise CheckpointError(f"{folder}: tensor for {key} is missing")
        if sd[key].shape != shape:
            raise CheckpointError(
                f"{folder}: {key} has shape {tuple(sd[key].shape)} but config.json implies {tuple(shape)}; "
                "the weights do not match this config"
            )
    model.load_state_dict(sd, strict=True)


def load_tokenizer(folder: Path, cfg: ModelConfig) -> Tokenizer:
    path = folder / "tokenizer.json"
    if not path.is_file():
        return ByteTokenizer()
    try:
        tok = JsonTokenizer(path)
    except Exception as exc:  # the tokenizers library raises plain Exception on bad files
        raise CheckpointError(f"{path}: cannot read tokenizer ({exc})") from None
    if tok.vocab_size > cfg.vocab_size:
        raise CheckpointError(
            f"{path} has {tok.vocab_size} tokens but the model's vocabulary is {cfg.vocab_size}; "
            "tokenizer and weights come from different models"
        )
    return tok


def _chat_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    tc = folder / "tokenizer_config.json"
    template = _read_json(tc).get("chat_template") if tc.is_file() else None
    return template if isinstance(template, str) else None


ZOO_MODELS = ("jp-small", "jp-large")  # trained by joulepath on its task suite, shipped in the package


def zoo_path(name: str) -> Path:
    """The folder of a shipped zoo model (Hugging Face layout)."""
    return Path(__file__).parent / "zoo" / name


def load_model(
    spec: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> LoadedModel:
    """Load `spec`: a built-in zoo model (`jp-small`, `jp-large`), a Hugging Face model folder, or
    `dummy:<preset>` (random weights, seeded)."""
    if spec in ZOO_MODELS:
        spec = str(zoo_path(spec))
    if spec.startswith("dummy:"):
        try:
            cfg = preset(spec.removeprefix("dummy:"))
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from None
        torch.manual_seed(seed)
        model = Transformer(cfg)
        init_weights(model)
        return LoadedModel(model.to(device=device, dtype=dtype).eval(), cfg, ByteTokenizer(), spec)
    folder = Path(spec)
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"{folder}: no config.json; give a zoo model ({', '.join(ZOO_MODELS)}), a Hugging Face model folder "
            "or dummy:<preset>"
        )
    try:
        cfg = from_hf(_read_json(folder / "config.json"))
    except ConfigError as exc:
        raise CheckpointError(f"{folder / 'config.json'}: {exc}") from None
    hf = _read_tensors(folder)
    try:
        sd = _hf_to_ours(hf, cfg)
    except KeyError as exc:
        raise CheckpointError(f"{folder}: tensor {exc.args[0]} is missing from the safetensors files") from None
    with torch.device("meta"):  # no random init of weights that are about to be overwritten
        model = Transformer(cfg)
    model.to_empty(device="cpu")
    model.inv_freq = rope_inv_freq(cfg)  # a computed, non-persistent buffer: meta holds no values
    _check_and_load(model, sd, folder)
    gen_path = folder / "generation_config.json"
    return LoadedModel(
        model=model.to(device=device, dtype=dtype).eval(),
        config=cfg,
        tokenizer=load_tokenizer(folder, cfg),
        source=str(folder),
        generation_config=_read_json(gen_path) if gen_path.is_file() else {},
        chat_template=_chat_template(folder),
    )


def init_weights(model: Transformer, std: float | None = None) -> None:
    """Random weights, norms at 1, biases at 0. `std=None` (dummy models): 1/sqrt(fan_in) for linear
    weights and 1 for embeddings, so activations keep unit scale and logits are well separated and
    greedy decoding is not decided by rounding noise when two implementations are compared. A number
    (training from scratch): that std for every weight matrix."""
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            torch.nn.init.ones_(p)
        elif name.endswith("bias"):
            torch.nn.init.zeros_(p)
        elif std is not None:
            torch.nn.init.normal_(p, std=std)
        elif name == "tok_embeddings.weight":
            torch.nn.init.normal_(p, std=1.0)
        else:  # Linear weights are (in_features, out_features)
            torch.nn.init.normal_(p, std=p.shape[0] ** -0.5)


def save_checkpoint(
    loaded: LoadedModel, folder: str | Path, shard_bytes: int | None = None, dtype: torch.dtype = torch.float32
) -> Path:
    """Save as a Hugging Face folder; with `shard_bytes`, split weights into shards with an index.
    `dtype` is the stored precision (the zoo ships bfloat16; loading converts to the dtype asked for)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = loaded.config
    sd = {k: v.detach().to("cpu", dtype) for k, v in loaded.model.state_dict().items()}
    hf = _ours_to_hf(sd, cfg)
    if shard_bytes is None:
        save_file(hf, str(folder / "model.safetensors"), metadata={"format": "pt"})
    else:
        _save_sharded(hf, folder, shard_bytes)
    (folder / "config.json").write_text(
        json.dumps({**to_hf(cfg), "torch_dtype": str(dtype).removeprefix("torch.")}, indent=2)
    )
    if loaded.generation_config:
        (folder / "generation_config.json").write_text(json.dumps(loaded.generation_config, indent=2))
    if isinstance(loaded.tokenizer, JsonTokenizer):
        loaded.tokenizer.save(folder / "tokenizer.json")
    if loaded.chat_template:
        (folder / "chat_template.jinja").write_text(loaded.chat_template)
    return folder


def _save_sharded(hf: dict[str, torch.Tensor], folder: Path, shard_bytes: int) -> None:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in hf.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / fname), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, fname))
    total = sum(t.numel() * t.element_size() for t in hf.values())
    (folder / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
