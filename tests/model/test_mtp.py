"""Packed-document attention and the multi-token heads shipped beside a model."""

from pathlib import Path

import pytest
import torch

from joulepath.model import DenseCausalAttention, DocumentAttention, load_model, save_checkpoint
from joulepath.model.mtp import MedusaHeads, MTPConfig, chain_acceptance, load_heads, save_heads


def test_document_attention_equals_each_document_alone() -> None:
    loaded = load_model("dummy:tiny-llama")
    model = loaded.model
    lens = [5, 9, 3]
    docs = [torch.randint(0, loaded.config.vocab_size, (n,)) for n in lens]
    row = torch.cat([*docs, torch.zeros(3, dtype=torch.long)])  # (20,) with 3 pads
    segments = torch.tensor([i for i, n in enumerate([*lens, 3]) for _ in range(n)])[None]  # (1, 20)
    positions = torch.cat([torch.arange(n) for n in [*lens, 3]])
    with torch.no_grad():
        packed = model(row, positions, DocumentAttention(segments, use_flex=False))
        at = 0
        for doc in docs:
            alone = model(doc, torch.arange(len(doc)), DenseCausalAttention([len(doc)]))
            torch.testing.assert_close(packed[at : at + len(doc)], alone, rtol=1e-4, atol=1e-4)
            at += len(doc)


def test_trunk_then_head_is_forward() -> None:
    model = load_model("dummy:tiny-llama").model
    ids, pos = torch.tensor([1, 2, 3, 4]), torch.arange(4)
    with torch.no_grad():
        attend = DenseCausalAttention([4])
        assert torch.equal(model(ids, pos, attend), model.output(model.norm(model.trunk(ids, pos, attend))))


def test_fresh_heads_predict_what_the_model_predicts() -> None:
    model = load_model("dummy:tiny-llama").model
    heads = MedusaHeads(MTPConfig(n_heads=3, d_model=model.cfg.d_model))
    h = torch.randn(7, model.cfg.d_model)
    with torch.no_grad():
        guesses = heads.logits(model, h)  # (3, 7, vocab)
    assert guesses.shape == (3, 7, model.cfg.vocab_size)
    torch.testing.assert_close(guesses[2], model.output(h))  # zero-initialised residual: the LM head alone


def test_heads_round_trip_and_a_plain_loader_ignores_them(tmp_path: Path) -> None:
    loaded = load_model("dummy:tiny-llama")
    save_checkpoint(loaded, tmp_path)
    heads = MedusaHeads(MTPConfig(n_heads=2, d_model=loaded.config.d_model))
    torch.nn.init.normal_(heads.proj, std=0.02)
    save_heads(heads, tmp_path)
    back = load_heads(tmp_path)
    assert back is not None and back.cfg == heads.cfg
    torch.testing.assert_close(back.proj, heads.proj.to(torch.bfloat16).float())
    assert load_model(str(tmp_path)).config == loaded.config  # the model folder still loads as before
    assert load_heads(tmp_path / "nowhere") is None


@pytest.mark.parametrize(
    ("hits", "expected"),
    [
        ([[False, False]] * 4, (3, 3)),  # no guess right: one token per forward after the first
        ([[True, True]] * 7, (6, 2)),  # both right every time: 3 tokens per forward
        (
            [[True, False], [False, False], [True, True], [False, False], [False, False]],
            (4, 2),
        ),  # last run ends the answer
        ([[True, True]], (0, 0)),  # a one-token answer needs no verification step
    ],
)
def test_chain_acceptance_counts(hits: list[list[bool]], expected: tuple[int, int]) -> None:
    assert chain_acceptance(hits) == expected


@pytest.mark.gpu
def test_flex_block_mask_equals_the_dense_mask_on_cuda() -> None:
    segments = torch.tensor([[0] * 100 + [1] * 150 + [2] * 6], device="cuda")  # (1, 256)
    q, k, v = (torch.randn(256, h, 64, device="cuda") for h in (8, 4, 4))
    flex = DocumentAttention(segments)(0, q, k, v)
    dense = DocumentAttention(segments, use_flex=False)(0, q, k, v)
    torch.testing.assert_close(flex, dense, rtol=2e-3, atol=2e-3)
