"""Self-distilled draft block: data kept off the golden sets, features aligned with the sequences, and a
fit that learns the target's own next tokens."""

import dataclasses

import pytest
import torch

from joulepath.model import load_model
from joulepath.quality.mtp_distill import (
    DistillConfig,
    collect_features,
    distill_examples,
    eagle_batch,
    fit_eagle,
    golden_prompts,
    greedy_answers,
    packs,
)
from joulepath.quality.tasks import LEVELS, SKILLS, chat_prompt


def test_distillation_prompts_cover_every_cell_and_avoid_the_golden_sets() -> None:
    examples = distill_examples(3, seed=11)
    assert len(examples) == 3 * len(SKILLS) * len(LEVELS)
    assert {(e.skill, e.level) for e in examples} == {(s, lv) for s in SKILLS for lv in LEVELS}
    assert not {chat_prompt(e) for e in examples} & golden_prompts()


def test_packs_keep_whole_sequences_under_the_budget() -> None:
    assert packs([3, 3, 5, 9], 8) == [[0, 1], [2], [3]]
    assert packs([], 8) == []


def test_packed_features_equal_one_sequence_at_a_time() -> None:
    loaded = load_model("jp-small")
    examples = [e for e in distill_examples(1, seed=3) if e.skill in ("add", "sort", "lookup")][:4]
    answers = greedy_answers(loaded, examples, max_tokens=16)
    packed = collect_features(loaded, examples, answers, pack_tokens=10_000)
    alone = collect_features(loaded, examples, answers, pack_tokens=1)
    for a, b, ex, ans in zip(packed, alone, examples, answers, strict=True):
        assert torch.equal(a.ids, b.ids) and a.prompt_len == len(loaded.tokenizer.encode(chat_prompt(ex)))
        torch.testing.assert_close(a.hidden.float(), b.hidden.float(), rtol=2e-2, atol=2e-2)
        # the target's greedy token after the prompt is the answer's first token (it is the model's own answer)
        assert int(a.greedy[a.prompt_len - 1]) == loaded.tokenizer.encode(ans + "<|end|>")[0]


def test_batch_targets_are_the_next_feature_and_the_targets_next_token() -> None:
    loaded = load_model("jp-small")
    examples = distill_examples(1, seed=4)[:3]
    feats = collect_features(loaded, examples, greedy_answers(loaded, examples, max_tokens=8))
    embed = loaded.model.embed(torch.arange(loaded.config.vocab_size)).detach().float()
    b = eagle_batch(feats, embed, 0.2, 0.0, None)
    s = feats[0]
    n = len(s.ids) - 1
    assert b.lengths[0] == n and torch.equal(b.positions[:n], torch.arange(n))
    torch.testing.assert_close(b.features[:n], s.hidden[:-1].float())
    torch.testing.assert_close(b.target_features[:n], s.hidden[1:].float())
    torch.testing.assert_close(b.next_embeds[:n], embed[s.ids[1:]])
    assert b.target_tokens[: n - 1].tolist() == s.greedy[1:-1].tolist() and int(b.target_tokens[n - 1]) == -100
    assert float(b.weights[s.prompt_len - 2]) == 1.0  # f_{i+1} at the prompt's last position gives answer token 0
    assert float(b.weights[s.prompt_len - 3]) == pytest.approx(0.2) and float(b.weights[0]) == pytest.approx(0.2)


def test_fit_learns_the_targets_own_continuations() -> None:
    loaded = load_model("jp-small")
    examples = distill_examples(2, seed=5)
    feats = collect_features(loaded, examples, greedy_answers(loaded, examples, max_tokens=16))
    _, log = fit_eagle(loaded, feats, dataclasses.replace(DistillConfig(), epochs=12, lr=3e-3, pack_tokens=1024))
    assert log.loss_last < 0.6 * log.loss_first
    assert log.token_accuracy_answer > 0.3


def test_fitting_nothing_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="no features"):
        fit_eagle(load_model("jp-small"), [], DistillConfig())
