import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from joulepath.model import CheckpointError, DenseCausalAttention, JsonTokenizer, load_model, save_checkpoint


def _logits(loaded, ids: list[int]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return loaded.model(torch.tensor(ids), torch.arange(len(ids)), DenseCausalAttention([len(ids)]))


def _tokenizer_file(folder: Path, vocab: int) -> Path:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["the joule path", "energy per token", "12 + 30 = 42"] * 20, trainer)
    path = folder / "tokenizer.json"
    tok.save(str(path))
    return path


@pytest.mark.parametrize("shard_bytes", [None, 20_000])
def test_save_load_round_trip(tmp_path: Path, shard_bytes: int | None) -> None:
    original = load_model("dummy:tiny-qwen2", seed=3)
    folder = save_checkpoint(original, tmp_path / "ckpt", shard_bytes=shard_bytes)
    if shard_bytes:
        assert (folder / "model.safetensors.index.json").is_file() and len(list(folder.glob("*.safetensors"))) > 1
    loaded = load_model(str(folder))
    assert loaded.config == original.config
    torch.testing.assert_close(_logits(loaded, [1, 2, 3, 4]), _logits(original, [1, 2, 3, 4]), atol=0, rtol=0)


def test_tokenizer_chat_template_and_generation_config(tmp_path: Path) -> None:
    folder = save_checkpoint(load_model("dummy:tiny-llama"), tmp_path / "m")
    _tokenizer_file(folder, 256)
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "chat_template": "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"
                "{% if add_generation_prompt %}<assistant>{% endif %}"
            }
        )
    )
    (folder / "generation_config.json").write_text(json.dumps({"temperature": 0.7, "eos_token_id": 2}))
    loaded = load_model(str(folder))
    assert isinstance(loaded.tokenizer, JsonTokenizer)
    ids = loaded.tokenizer.encode("energy per token")
    assert loaded.tokenizer.decode(ids) == "energy per token"
    assert loaded.generation_config["temperature"] == 0.7
    text = loaded.apply_chat_template([{"role": "user", "content": "hi"}])
    assert text == "<user>hi\n<assistant>"


def test_missing_and_unknown(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        load_model(str(tmp_path))
    with pytest.raises(CheckpointError, match=r"unknown model preset .nope."):
        load_model("dummy:nope")
    folder = save_checkpoint(load_model("dummy:tiny-llama"), tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    with pytest.raises(CheckpointError, match="model_type 'gpt2' is not supported"):
        load_model(str(folder))


def test_truncated_weights(tmp_path: Path) -> None:
    folder = save_checkpoint(load_model("dummy:tiny-llama"), tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(str(folder))


def test_missing_shard(tmp_path: Path) -> None:
    folder = save_checkpoint(load_model("dummy:tiny-llama"), tmp_path / "m", shard_bytes=20_000)
    next(folder.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match=r"listed in model\.safetensors\.index\.json but missing"):
        load_model(str(folder))


def test_shape_mismatch(tmp_path: Path) -> None:
    folder = save_checkpoint(load_model("dummy:tiny-llama"), tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 96}))
    with pytest.raises(CheckpointError, match="do not match this config"):
        load_model(str(folder))


def test_tokenizer_larger_than_vocabulary(tmp_path: Path) -> None:
    folder = save_checkpoint(load_model("dummy:tiny-llama"), tmp_path / "m")  # vocab 256
    _tokenizer_file(folder, 300)
    with pytest.raises(CheckpointError, match="different models"):
        load_model(str(folder))


def test_missing_tensor(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = save_checkpoint(load_model("dummy:tiny-llama"), tmp_path / "m")
    tensors = load_file(str(folder / "model.safetensors"))
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"up_proj\.weight is missing"):
        load_model(str(folder))
