"""The feature-level draft block (EAGLE-1 style): shipped beside a model, drafting from the engine's features
with its own paged KV exactly as a dense recomputation would, and greedy output identical to plain decoding."""

import dataclasses
from pathlib import Path

import pytest
import torch

from joulepath.engine import Engine, EngineConfig, SamplingParams
from joulepath.engine.speculative import EagleProposer
from joulepath.model import DenseCausalAttention, LoadedModel, load_model, save_checkpoint
from joulepath.model.eagle import EagleConfig, EagleDraft, load_eagle, save_eagle
from joulepath.quality.mtp_distill import DistillConfig, fit_eagle, sequence_features

from .conftest import BS, identical_under_pressure
from .conftest import pressure_config as _pressure
from .conftest import serve_requests as _serve
from .conftest import spec_requests as _requests


@pytest.fixture(scope="module")
def with_block(tmp_path_factory: pytest.TempPathFactory, tiny: LoadedModel) -> LoadedModel:
    """The tiny model with a draft block trained briefly on its own greedy continuations (so some drafts
    are accepted and some rejected), loaded from its folder as serving would."""
    _, outs = _serve(tiny, EngineConfig(block_size=BS, max_batch=16), _requests(120, seed=9))
    seqs = [(p, o) for (p, _), o in zip(_requests(120, seed=9), outs, strict=True)]
    draft, _ = fit_eagle(tiny, sequence_features(tiny, seqs), dataclasses.replace(DistillConfig(), epochs=40, lr=3e-3))
    folder = save_checkpoint(tiny, tmp_path_factory.mktemp("eagle") / "tiny", dtype=torch.float64)
    save_eagle(draft, folder)
    return load_model(str(folder), dtype=torch.float64)


def test_block_round_trips_and_a_plain_loader_ignores_it(tiny: LoadedModel, tmp_path: Path) -> None:
    folder = save_checkpoint(tiny, tmp_path / "m")
    draft = EagleDraft(EagleConfig.for_target(tiny.config), tiny.config)
    save_eagle(draft, folder)
    back = load_eagle(folder, tiny.config)
    assert back is not None and back.cfg == draft.cfg
    for (name, a), (_, b) in zip(draft.state_dict().items(), back.state_dict().items(), strict=True):
        torch.testing.assert_close(b, a.to(torch.bfloat16).float(), msg=name)
    assert load_model(str(folder)).config == tiny.config  # the folder still loads as before
    assert load_eagle(tmp_path / "nowhere", tiny.config) is None


def test_a_block_for_another_model_is_refused_with_the_reason(tiny: LoadedModel, tmp_path: Path) -> None:
    folder = save_checkpoint(tiny, tmp_path / "m")
    other = dataclasses.replace(tiny.config, vocab_size=tiny.config.vocab_size + 7)
    save_eagle(EagleDraft(EagleConfig.for_target(other), other), folder)
    with pytest.raises(ValueError, match="retrain it"):
        load_eagle(folder, tiny.config)
    with pytest.raises(ValueError, match="ships no draft block"):
        Engine(tiny, EngineConfig(speculative="eagle"))


@torch.no_grad()
def _dense_drafts(target: LoadedModel, draft: EagleDraft, ids: list[int], k: int) -> list[int]:
    """Reference drafting by full recomputation: true features of ids[:-1], then k chained guesses."""
    model = target.model
    n = len(ids)
    feats = model.norm(model.trunk(torch.tensor(ids), torch.arange(n), DenseCausalAttention([n])))[: n - 1]
    toks = list(ids[1:])
    out: list[int] = []
    for _ in range(k):
        m = len(toks)
        pred = draft(feats, model.embed(torch.tensor(toks)), torch.arange(m), DenseCausalAttention([m]))
        guess = int(model.output(pred[-1]).argmax())
        out.append(guess)
        feats = torch.cat([feats, pred[-1:]])
        toks.append(guess)
    return out


@pytest.mark.parametrize("max_batch", [1, 8])
def test_greedy_output_is_token_identical_and_drafts_are_used(with_block: LoadedModel, max_batch: int) -> None:
    proposed, accepted = identical_under_pressure(with_block, "eagle", max_batch, seed=max_batch + 20)
    assert proposed > 0 and 0 < accepted < proposed  # both branches of verification ran


def _spied(engine: Engine) -> tuple[EagleProposer, list[tuple[list[int], tuple[int, ...]]]]:
    """The engine's EAGLE proposer, recording (sequence ids, drafts) of every proposal it makes."""
    proposer = engine.speculator.proposer if engine.speculator else None
    assert isinstance(proposer, EagleProposer)
    seen: list[tuple[list[int], tuple[int, ...]]] = []
    propose = proposer.propose

    def spy(seqs, ks):  # type: ignore[no-untyped-def]
        out = propose(seqs, ks)
        seen.extend((list(s.all_ids), d) for s, d in zip(seqs, out, strict=True) if d)
        return out

    proposer.propose = spy  # type: ignore[method-assign]
    return proposer, seen


@pytest.mark.parametrize("pressure", [False, True])
def test_incremental_drafts_equal_a_dense_recomputation(with_block: LoadedModel, pressure: bool) -> None:
    base = _pressure(with_block, 8) if pressure else EngineConfig(block_size=BS)
    engine = Engine(with_block, dataclasses.replace(base, speculative="eagle", spec_adaptive=False, spec_max_k=3))
    proposer, seen = _spied(engine)
    for prompt, m in _requests(16 if pressure else 6, seed=31):
        engine.add_request(prompt, SamplingParams(max_tokens=m, ignore_eos=True))
    engine.run_until_done()
    assert len(seen) > 5
    if pressure:  # chunked prefills and preemptions happened, and the draft still saw the true features
        assert sum(r.preemptions for r in engine.records) > 0
    for ids, drafted in seen:
        assert list(drafted) == _dense_drafts(with_block, proposer.draft, ids, len(drafted))


@pytest.mark.parametrize("prompt_len", [25, 24])  # 24: the prompt ends on a block boundary
def test_a_prefix_cache_hit_reads_the_cached_blocks_features_back(with_block: LoadedModel, prompt_len: int) -> None:
    config = EngineConfig(block_size=BS, prefix_cache=True, speculative="eagle", spec_adaptive=False)
    prompt = ([7, 8, 9, 10, 11] * 5)[:prompt_len]
    engine = Engine(with_block, config)
    first = engine.add_request(prompt, SamplingParams(max_tokens=8, ignore_eos=True))
    engine.run_until_done()
    proposer, seen = _spied(engine)
    assert proposer.stored
    follow = [*prompt, *engine.output_ids(first), 12]  # the next turn: the answer is part of the prefix
    for ids in ([*prompt, 12], follow):
        rid = engine.add_request(ids, SamplingParams(max_tokens=8, ignore_eos=True))
        engine.run_until_done()
        assert engine.record(rid).cached_prompt_tokens >= (len(ids) - 1) // BS * BS - BS  # the hit under test
    assert engine.record(rid).cached_prompt_tokens > len(prompt)  # answer blocks were cached, and hit
    assert proposer.no_features == 0 and seen  # drafted from the stored blocks' features
    for ids, drafted in seen:
        assert list(drafted) == _dense_drafts(with_block, proposer.draft, ids, len(drafted))
    proposer.stored.clear()  # evicted: a hit now finds no features and the block declines, counted
    engine.add_request([*prompt, 13], SamplingParams(max_tokens=8, ignore_eos=True))
    engine.run_until_done()
    assert proposer.no_features > 0
