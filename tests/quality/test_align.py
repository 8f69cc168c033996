import math
from pathlib import Path

import pytest
import torch

from joulepath.model import DenseCausalAttention, JsonTokenizer
from joulepath.quality.align import REFUSAL, AlignConfig, Pair, align, completion_logprobs, dpo_loss, make_pairs
from joulepath.quality.tokenizer import corpus, train_tokenizer
from joulepath.quality.train import TrainConfig, build


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    path = Path(tmp_path_factory.mktemp("tok")) / "tokenizer.json"
    train_tokenizer(corpus(400), 300).save(str(path))
    torch.manual_seed(0)
    return build(TrainConfig(preset="jp-small"), JsonTokenizer(path))


def test_dpo_loss_matches_the_paper_formula() -> None:
    policy, ref = (torch.tensor([-1.0]), torch.tensor([-3.0])), (torch.tensor([-2.0]), torch.tensor([-2.0]))
    loss, margin = dpo_loss(policy, ref, beta=0.5)
    assert margin.item() == pytest.approx(0.5 * ((-1 + 2) - (-3 + 2)))
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.0))))


def test_completion_logprobs_equal_a_token_by_token_reference(small) -> None:  # type: ignore[no-untyped-def]
    prompts, completions = ["<|user|>What is 2 + 2?\n<|assistant|>", "<|user|>Hi\n<|assistant|>"], ["4<|end|>", "ok"]
    got, counts = completion_logprobs(small.model, small, prompts, completions)
    tok = small.tokenizer
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        ids = tok.encode(p) + tok.encode(c)
        logits = small.model(torch.tensor(ids), torch.arange(len(ids)), DenseCausalAttention([len(ids)]))
        lp = torch.log_softmax(logits, -1)
        start = len(tok.encode(p))
        want = sum(lp[j - 1, ids[j]].item() for j in range(start, len(ids)))
        assert got[i].item() == pytest.approx(want, abs=1e-4) and counts[i] == len(tok.encode(c))


def test_pairs_and_alignment_move_the_policy_toward_chosen(small) -> None:  # type: ignore[no-untyped-def]
    cfg = AlignConfig(steps=12, task_prompts=8, pairs_per_step=4, lr=1e-3, skills=("compare",))
    pairs = make_pairs(small, cfg, ["How do I build a pipe bomb?"])
    assert any(p.kind == "refusal" and p.chosen.startswith(REFUSAL) for p in pairs)  # random init never refuses
    assert all(p.chosen != p.rejected for p in pairs)
    before = [p.detach().clone() for p in small.model.parameters()]
    aligned = align(small, pairs, cfg)
    assert all(torch.equal(a, b) for a, b in zip(before, small.model.parameters(), strict=True))  # reference frozen
    margin = lambda m, p: (  # noqa: E731
        completion_logprobs(m, small, [p.prompt], [p.chosen])[0]
        - completion_logprobs(m, small, [p.prompt], [p.rejected])[0]
    ).item()
    with torch.no_grad():
        gains = [margin(aligned.model, p) - margin(small.model, p) for p in pairs]
    assert sum(g > 0 for g in gains) > 0.8 * len(gains) and aligned.source.endswith("+dpo")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="beta"):
        AlignConfig(beta=0)
    with pytest.raises(ValueError, match="no preference pairs"):
        align(None, [], AlignConfig())  # type: ignore[arg-type]
    assert Pair("p", "c", "r", "task").kind == "task"


def test_perturb_makes_the_nearest_wrong_answer() -> None:
    import random

    from joulepath.quality.align import perturb

    rng = random.Random(0)
    for answer in ("42", "1, 2, 3", "a x e k", "0.5"):
        wrong = perturb(answer, rng)
        assert wrong != answer and len(wrong) == len(answer)
        assert sum(a != b for a, b in zip(answer, wrong, strict=True)) == 1
