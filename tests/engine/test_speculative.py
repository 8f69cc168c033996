"""Speculative decoding: proposers, greedy outputs token-identical to plain decoding (batches, chunking,
preemption), rejection sampling that keeps the target's distribution, and k chosen from measurements."""

import dataclasses
from pathlib import Path

import pytest
import torch
from scipy.stats import chi2_contingency

from joulepath.engine import Engine, EngineConfig, SamplingParams
from joulepath.engine.speculative import Speculator, StepCost, expected_tokens, lookup, verify
from joulepath.model import LoadedModel, load_model, save_checkpoint
from joulepath.model.mtp import MedusaHeads, MTPConfig, save_heads

from .conftest import BS, identical_under_pressure
from .conftest import pressure_config as _pressure
from .conftest import serve_requests as _serve
from .conftest import spec_requests as _requests


def test_prompt_lookup_continues_the_latest_match_of_the_longest_suffix() -> None:
    assert lookup([5, 6, 7, 9, 5, 6], 2) == (7, 9)
    assert lookup([1, 2, 3, 1, 2, 4, 1, 2], 3) == (4, 1, 2)  # the latest "1 2" wins
    assert lookup([1, 2, 3], 2) == ()  # nothing repeats
    assert lookup([4, 4, 4], 5) == (4,)  # a match that runs into the end proposes what there is


@pytest.mark.parametrize("max_batch", [1, 8])
def test_prompt_lookup_greedy_output_is_token_identical(tiny: LoadedModel, max_batch: int) -> None:
    proposed, accepted = identical_under_pressure(tiny, "prompt_lookup", max_batch, seed=max_batch)
    assert proposed > 0 and 0 < accepted <= proposed  # drafts were verified, some kept


def test_a_draft_model_equal_to_the_target_is_always_accepted(tiny: LoadedModel, tmp_path: Path) -> None:
    folder = save_checkpoint(tiny, tmp_path / "twin", dtype=torch.float64)
    target = load_model(str(folder), dtype=torch.float64)
    requests = _requests(12, seed=3)
    config = EngineConfig(block_size=BS, speculative="draft", draft_model=str(folder), spec_adaptive=False)
    _, plain = _serve(target, EngineConfig(block_size=BS), requests)
    engine, spec = _serve(target, config, requests)
    assert spec == plain
    assert sum(r.draft_accepted for r in engine.records) == sum(r.draft_proposed for r in engine.records) > 0


def test_a_different_draft_model_keeps_the_output_identical(tiny: LoadedModel) -> None:
    requests = _requests(16, seed=4)
    config = dataclasses.replace(
        _pressure(tiny, 4), speculative="draft", draft_model="dummy:tiny-qwen2", spec_adaptive=False
    )
    _, plain = _serve(tiny, _pressure(tiny, 4), requests)
    engine, spec = _serve(tiny, config, requests)
    assert spec == plain
    assert sum(r.draft_proposed for r in engine.records) > 0


def test_multi_token_heads_propose_and_greedy_output_is_identical(tiny: LoadedModel, tmp_path: Path) -> None:
    folder = save_checkpoint(tiny, tmp_path / "with-heads", dtype=torch.float64)
    heads = MedusaHeads(MTPConfig(n_heads=3, d_model=tiny.config.d_model))  # zero heads: guess the base's own next
    save_heads(heads, folder)
    loaded = load_model(str(folder), dtype=torch.float64)
    requests = _requests(16, seed=5)
    _, plain = _serve(loaded, _pressure(loaded, 4), requests)
    config = dataclasses.replace(_pressure(loaded, 4), speculative="mtp", spec_adaptive=False)
    engine, spec = _serve(loaded, config, requests)
    assert spec == plain
    assert sum(r.draft_proposed for r in engine.records) > 0


def test_bad_speculative_settings_say_what_to_do(tiny: LoadedModel) -> None:
    with pytest.raises(ValueError, match="must be one of"):
        EngineConfig(speculative="medusa-9")
    with pytest.raises(ValueError, match=r"needs EngineConfig\.draft_model"):
        Engine(tiny, EngineConfig(speculative="draft"))
    with pytest.raises(ValueError, match="ships no multi-token heads"):
        Engine(tiny, EngineConfig(speculative="mtp"))
    big_vocab = load_model("dummy:tiny-llama", seed=1)
    with pytest.raises(ValueError, match="share the target's tokenizer"):
        from joulepath.engine.speculative import DraftModel

        DraftModel(
            big_vocab,
            dataclasses.replace(big_vocab, config=dataclasses.replace(big_vocab.config, vocab_size=9)),
            1 << 20,
        )


def test_rejection_sampling_keeps_the_targets_distribution() -> None:
    """Over many seeds, the token a verify step emits (draft accepted, or resampled) is distributed as the
    target's own sample: a chi-square test of the two histograms (p > 0.001; a biased rule fails it)."""
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]])
    params = SamplingParams(temperature=1.0)
    n = 6000
    spec, plain = [0] * 5, [0] * 5
    for seed in range(n):
        g = torch.Generator().manual_seed(seed)
        tokens, _ = verify(torch.cat([logits, logits]), (1,), params, g)  # always propose token 1
        spec[tokens[0]] += 1
        plain[int(torch.multinomial(logits[0].softmax(-1), 1, generator=g))] += 1
    assert chi2_contingency([spec, plain]).pvalue > 1e-3
    biased = [0] * 5
    for seed in range(n):  # accepting the draft whenever p(d) > 0.1 is not exact, and the test sees it
        g = torch.Generator().manual_seed(seed)
        biased[1 if logits[0].softmax(-1)[1] > 0.1 else 0] += 1
    assert chi2_contingency([biased, plain]).pvalue < 1e-3


def test_sampled_requests_with_drafts_match_plain_sampling_in_distribution(tiny: LoadedModel) -> None:
    """The second and third generated tokens over 600 seeds, with a draft model that disagrees often."""
    params = [SamplingParams(max_tokens=3, temperature=1.0, top_k=6, seed=s, ignore_eos=True) for s in range(600)]

    def tokens(config: EngineConfig) -> list[int]:
        engine = Engine(tiny, config)
        ids = [engine.add_request([7, 8, 9, 7, 8], p) for p in params]
        engine.run_until_done()
        return [t for i in ids for t in engine.output_ids(i)[1:]]

    spec_cfg = EngineConfig(block_size=BS, max_batch=64, speculative="draft", draft_model="dummy:tiny-qwen2",
                            spec_adaptive=False)  # fmt: skip
    plain, spec = tokens(EngineConfig(block_size=BS, max_batch=64)), tokens(spec_cfg)
    vocab = sorted(set(plain) | set(spec))
    table = [[plain.count(t) for t in vocab], [spec.count(t) for t in vocab]]
    assert chi2_contingency(table).pvalue > 1e-3


def test_k_is_chosen_from_measured_acceptance_and_step_cost() -> None:
    cost = StepCost()
    for tokens in (1, 2, 3, 4, 5, 1, 2, 3):
        cost.observe(tokens, 0.010 + 0.010 * tokens)  # a compute-bound step: every token costs as much
    a, b = cost.coefficients() or (0.0, 0.0)
    assert a == pytest.approx(0.010, rel=1e-3) and b == pytest.approx(0.010, rel=1e-3)

    class Seq:
        def __init__(self, proposed: int, accepted: int) -> None:
            from joulepath.engine.speculative import SpecState

            self.spec = SpecState(proposed=proposed, accepted=accepted)
            self.all_ids: list[int] = []

    spec = Speculator(proposer=None, max_k=4, cost=cost)  # type: ignore[arg-type]
    assert spec.plan([Seq(100, 5)], [4]) == [0]  # 5 % acceptance: a draft costs more than it brings
    assert spec.plan([Seq(100, 98)], [4]) == [4]  # near-certain acceptance pays on any step
    memory_bound = StepCost()
    for tokens in (1, 2, 3, 4, 5, 1, 2, 3):
        memory_bound.observe(tokens, 0.020 + 0.0005 * tokens)  # the weight read dominates
    spec = Speculator(proposer=None, max_k=4, cost=memory_bound)  # type: ignore[arg-type]
    assert spec.plan([Seq(100, 30)], [4])[0] >= 1  # 30 % acceptance pays when extra tokens are cheap
    assert spec.plan([Seq(100, 98)], [2]) == [2]  # never past the room left
    assert expected_tokens(0.5, 2) == pytest.approx(1.75)


def test_a_draft_pays_when_its_acceptance_beats_the_share_of_a_decode_step_it_costs() -> None:
    """With a + b x n step costs, a draft is worth alpha x (a + b x n) / n seconds of plain decoding and costs b:
    here (a = b, n = 1) the break-even acceptance is 0.5."""
    cost = StepCost()
    for tokens in (1, 2, 3, 1, 2, 3):
        cost.observe(tokens, 0.010 + 0.010 * tokens)

    class Seq:
        def __init__(self, accepted: int) -> None:
            from joulepath.engine.speculative import SpecState

            self.spec = SpecState(proposed=1000, accepted=accepted)
            self.all_ids: list[int] = []

    spec = Speculator(proposer=None, max_k=4, cost=cost)  # type: ignore[arg-type]
    assert spec.plan([Seq(550)], [4]) == [1]  # ~0.55: one draft pays (1.55 tokens / 30 ms > 1 / 20 ms), two do not
    assert spec.plan([Seq(450)], [4]) == [0]  # ~0.45: 1.45 tokens / 30 ms < 1 / 20 ms


def test_a_fitted_slope_survives_a_long_run_of_plain_steps() -> None:
    """With speculation switched off every step has the same size; the fit must not decay back to 'unknown'
    (which would restart probing with drafts), and its intercept follows the newer steps."""
    cost = StepCost()
    for tokens in (1, 2, 1, 2, 1, 2):
        cost.observe(tokens, 0.010 + 0.002 * tokens)
    assert cost.coefficients() == pytest.approx((0.010, 0.002), rel=1e-6)
    for _ in range(2000):  # 0.98 ** 2000: the sized steps are forgotten
        cost.observe(1, 0.020 + 0.002)  # the machine got slower
    a, b = cost.coefficients() or (0.0, 0.0)
    assert b == pytest.approx(0.002, rel=1e-6) and a == pytest.approx(0.020, rel=1e-3)
    assert StepCost(n=10, sx=10.0, sy=0.1, sxx=10.0).coefficients() is None  # never fitted: still unknown


def test_speculation_switched_off_still_explores_now_and_then() -> None:
    """A plan that keeps k = 0 drafts one token once every `explore_every` steps, so the acceptance it trusts
    is measured again (traffic that would pay can turn speculation back on)."""

    class Seq:
        def __init__(self) -> None:
            from joulepath.engine.speculative import SpecState

            self.spec = SpecState(proposed=200, accepted=10)
            self.all_ids: list[int] = []

    cost = StepCost()
    for tokens in (1, 2, 1, 2, 1, 2):
        cost.observe(tokens, 0.010 + 0.010 * tokens)  # drafts cost as much as tokens: 5 % acceptance never pays
    spec = Speculator(proposer=None, max_k=4, cost=cost, explore_every=50)  # type: ignore[arg-type]
    spec.proposed, spec.accepted = 200, 10
    plans = [spec.plan([Seq(), Seq()], [4, 4]) for _ in range(120)]
    drafting = [i for i, ks in enumerate(plans) if any(ks)]
    assert drafting == [49, 99] and all(plans[i] == [1, 0] for i in drafting)
    assert spec.plan([Seq()], [0]) == [0]  # no room: nothing to explore with


def test_before_a_cost_fit_plans_alternate_plain_and_one_draft_steps() -> None:
    """A proposer that always proposes must still let plain steps be measured, or the fit never comes."""

    class Seq:
        def __init__(self, n: int = 3) -> None:
            from joulepath.engine.speculative import SpecState

            self.spec = SpecState()
            self.all_ids = list(range(n))

    spec = Speculator(proposer=None, max_k=4)  # type: ignore[arg-type]
    plans = [spec.plan([Seq()], [4])[0] for _ in range(4)]
    assert sorted(set(plans)) == [0, 1]
    # a step that prefill shares is not measured (the cost fit takes decode steps only): no probe there, and the
    # alternation waits for a step that is
    probes = spec.probes
    assert [spec.plan([Seq()], [4], measurable=False) for _ in range(5)] == [[0]] * 5 and spec.probes == probes
    # a probe drafts one token for one sequence, the one with the shortest context (a model drafter's catch-up
    # runs over every token it has not seen), and never for a sequence with no room
    spec = Speculator(proposer=None, max_k=4)  # type: ignore[arg-type]
    batch = [Seq(300), Seq(40), Seq(20), Seq(90)]
    plans = [spec.plan(batch, [4, 4, 0, 4]) for _ in range(4)]
    assert [ks for ks in plans if any(ks)] == [[0, 1, 0, 0]] * 2 and [0, 0, 0, 0] in plans


def measurability(tiny: LoadedModel, prompts: list[list[int]], **config: int) -> list[tuple[int, bool]]:
    """(decoding sequences, measurable) for every plan the scheduler asks for while serving `prompts`."""
    from joulepath.engine.kv_cache import PagedKVCache

    if "kv_blocks" in config:
        per_block = PagedKVCache.bytes_per_block(tiny.config, BS, next(tiny.model.parameters()).dtype)
        config = {k: v for k, v in config.items() if k != "kv_blocks"} | {
            "kv_memory_bytes": config["kv_blocks"] * per_block
        }
    engine = Engine(tiny, EngineConfig(block_size=BS, speculative="prompt_lookup", **config))  # type: ignore[arg-type]
    assert engine.speculator is not None
    seen: list[tuple[int, bool]] = []
    engine.speculator.plan = lambda seqs, room, measurable=True: seen.append((len(seqs), measurable)) or [0] * len(seqs)  # type: ignore[method-assign]
    for p in prompts:
        engine.add_request(p, SamplingParams(max_tokens=4, ignore_eos=True))
    engine.run_until_done()
    return seen


def test_the_scheduler_says_which_steps_the_step_cost_fit_can_measure(tiny: LoadedModel) -> None:
    """Decode-only steps are measurable; a step that a running prefill or an admissible waiting request will
    share is not; a queue held back by the KV budget leaves the steps decode-only, so they count."""
    short, long = [5, 6, 7], list(range(10, 50))
    # a full batch: the second request waits, the first decodes alone
    assert measurability(tiny, [short, short], max_batch=1) == [(1, True)] * 6
    # the long prompt prefills 8 tokens a step while the short one decodes beside it
    mixed = measurability(tiny, [short, long], max_batch=2, max_tokens_per_step=8)
    assert (1, False) in mixed and mixed[-1] == (1, True)
    # room in the batch but not in the KV cache (4 blocks: one request at a time): decode-only, measurable
    blocked = measurability(tiny, [long[:12], long[:12]], max_batch=2, kv_blocks=4)
    assert blocked and all(m for _, m in blocked[1:])


def test_the_proposer_is_not_asked_on_steps_where_no_sequence_drafts(tiny: LoadedModel) -> None:
    engine = Engine(tiny, EngineConfig(block_size=BS, speculative="prompt_lookup"))
    assert engine.speculator is not None
    asked: list[list[int]] = []
    propose = engine.speculator.proposer.propose
    engine.speculator.proposer.propose = lambda seqs, ks: asked.append(ks) or propose(seqs, ks)  # type: ignore[method-assign]
    engine.speculator.plan = lambda seqs, room, measurable=True: [0] * len(seqs)  # type: ignore[method-assign]
    out = engine.generate([[5, 6, 7, 5, 6, 7, 5, 6]], SamplingParams(max_tokens=6, ignore_eos=True))
    assert len(out[0].output_ids) == 6 and asked == []
    engine.speculator.plan = lambda seqs, room, measurable=True: [1] * len(seqs)  # type: ignore[method-assign]
    engine.generate([[5, 6, 7, 5, 6, 7, 5, 6]], SamplingParams(max_tokens=6, ignore_eos=True))
    assert asked and all(ks == [1] for ks in asked)
