"""The served-here comparison: each configuration served `serve.repeats` times, interleaved, and every
local ratio reported as the median and min-max of the paired repetitions."""

from collections import Counter

import numpy as np
import pytest

from joulepath.execute import Routing, serve_interleaved
from joulepath.model import LoadedModel, load_model
from joulepath.quality.tasks import Example
from joulepath.results import LocalComparison, median_run
from joulepath.scenario import ServeSection


def test_configurations_are_served_interleaved_and_paired() -> None:
    examples = [Example("add", "easy", "What is 2 + 3?", "5"), Example("add", "easy", "What is 4 + 4?", "8")]
    serve = ServeSection(model="dummy:tiny-llama", max_batch=2, max_tokens=3, repeats=3, quantize="off")
    seen: list[str] = []
    steps = serve_interleaved(load_model("dummy:tiny-llama"), np.zeros(2), examples, serve, None, seen.append)
    order = [m.split(": ", 1)[1].split(" (")[0] for m in seen if m.startswith("serving")]
    assert order == ["baseline", "continuous batching", "optimized"] * 3  # A B C A B C A B C: the ladder
    assert [s.lever for s in steps] == ["brute force", "continuous batching", "prefix cache"]
    assert steps[-1].description == "continuous batching + prefix cache"
    assert not steps[1].runs[0].kv and steps[2].runs[0].kv  # the prefix cache only from its own rung on
    ratio = steps[2].ratio_to(steps[1])
    assert len(ratio.values) == 3 and ratio.values[0] == pytest.approx(
        steps[2].runs[0].j_per_token / steps[1].runs[0].j_per_token
    )
    baselines, optimizeds = list(steps[0].runs), list(steps[-1].runs)
    ends = serve.model_copy(update={"ablation": False, "repeats": 1})
    two = serve_interleaved(load_model("dummy:tiny-llama"), np.zeros(2), examples, ends, None)
    assert [s.lever for s in two] == ["brute force", "every lever"]
    assert [r.max_batch for r in baselines] == [1, 1, 1] and [r.max_batch for r in optimizeds] == [2, 2, 2]
    local = LocalComparison(
        "m", "cpu", median_run(baselines), median_run(optimizeds), None, *map(tuple, (baselines, optimizeds))
    )
    spread = local.ratio("j_per_token")
    expected = [o.j_per_token / b.j_per_token for b, o in zip(baselines, optimizeds, strict=True)]
    assert spread.values == pytest.approx(expected) and spread.low <= spread.median <= spread.high
    assert local.repeats == 3 and {s.metric for s in local.ratios()} == {"j_per_token", "tokens_per_s", "ttft_p99_s"}
    assert local.baseline.j_per_token == sorted(r.j_per_token for r in baselines)[1]  # the median repetition


def test_repeats_is_a_serve_field_with_default_three() -> None:
    assert ServeSection().repeats == 3
    with pytest.raises(ValueError, match="repeats"):
        ServeSection(repeats=0)


def test_the_optimized_engine_follows_the_scenario_and_drafts_reach_the_work_profile() -> None:
    import numpy as np

    from joulepath.execute import engine_config, replay
    from joulepath.link import work_profile
    from joulepath.model import load_model
    from joulepath.quality.tasks import Example
    from joulepath.scenario import ServeSection

    serve = ServeSection(model="dummy:tiny-llama", speculative="prompt_lookup", kv_offload_disk_mib=0)
    config = engine_config(serve, optimized=True)
    assert config.speculative == "prompt_lookup" and config.prefix_cache and config.offload_disk_bytes == 0
    assert engine_config(serve, optimized=False).speculative is None  # the baseline never speculates
    examples = [Example("add", "easy", "What is 12 + 12 + 12 + 12?", "48")] * 3
    run = replay(load_model("dummy:tiny-llama"), "o", 2, np.zeros(3), examples, 16, None, config)
    w = work_profile(run)
    assert sum(r.record.decode_steps for r in run.requests) > 0
    assert w.proposed_draft_tokens_per_step is not None and w.accepted_draft_tokens_per_step >= 0


ROUTED_EXAMPLES = [Example("add", "easy", f"What is {k} + 3?", str(k + 3)) for k in range(4)]


def threshold_routing(small: LoadedModel, cascade_cut: float | None = None) -> Routing:
    """A router over `ROUTED_EXAMPLES` that sends the first two to the small tier (right on those only)."""
    from joulepath.serving.router import CorrectnessModel, Router, request_features

    tiers = ("dummy:tiny-llama", "dummy:tiny-llama-large")
    features = request_features([e.user_text for e in ROUTED_EXAMPLES], [10] * 4)
    model = CorrectnessModel.fit(
        features, {tiers[0]: np.array([1, 1, 0, 0], bool), tiers[1]: np.ones(4, bool)}, c=100.0
    )
    return Routing(small, Router(model, tiers, (1.0, 3.0), "threshold", 0.5), cascade_cut)


def test_tiered_routing_is_a_rung_its_records_say_which_tier_and_the_share_reaches_the_work_profile() -> None:
    from joulepath.link import work_profile

    examples = ROUTED_EXAMPLES
    small = load_model("dummy:tiny-llama")
    serve = ServeSection(model="dummy:tiny-llama", max_batch=2, max_tokens=3, repeats=1, quantize="off")
    routing = threshold_routing(small, cascade_cut=-0.5)
    steps = serve_interleaved(small, np.zeros(4), examples, serve, None, weights=None, routing=routing)
    assert [s.lever for s in steps][-1].startswith("tiered routing")
    assert not steps[-2].runs[0].tier_mix()  # the rung before it serves one model
    run = steps[-1].runs[0]
    routed = {r.record.request_id: r.tier for r in run.requests}
    assert routed == {"r0": "dummy:tiny-llama", "r1": "dummy:tiny-llama", "r2": "dummy:tiny-llama-large",
                      "r3": "dummy:tiny-llama-large"}  # fmt: skip
    assert all(r.route.startswith("threshold") for r in run.requests)
    mix = run.tier_mix()
    assert [t.tier for t in mix] == ["dummy:tiny-llama", "dummy:tiny-llama-large"] and sum(t.requests for t in mix) == 4
    w = work_profile(run)
    assert run.small_tier_share == 0.5 and w.small_tier_share == 0.5
    large = [r for r in run.requests if r.tier == "dummy:tiny-llama-large"]
    assert w.requests == 2 and w.output_tokens == sum(r.record.output_tokens for r in large)  # the served model's own
    assert sum(t.energy_j for t in mix) == pytest.approx(sum(r.record.energy_j for r in run.requests))

    from joulepath.execute import Weights, ladder, tier_policies

    seen: list[str] = []
    rungs = ladder(small, serve, Weights(small), routing)
    rows = {p.policy: p for p in tier_policies(steps, rungs, serve, np.zeros(4), examples, None, seen.append)}
    assert list(rows) == ["always-large", "always-small", "router", "cascade", "oracle"]
    assert rows["router"].small_tier_share == 0.5 and rows["always-small"].small_tier_share == 1.0
    assert rows["always-large"].small_tier_share == 0.0 and rows["always-large"].accuracy == steps[-2].runs[0].accuracy
    assert rows["always-large"].how.endswith("the rung before routing")  # it serves alike: not served again
    assert not any("always-large" in m for m in seen)
    assert rows["oracle"].accuracy >= max(rows[k].accuracy for k in ("always-large", "always-small", "cascade"))
    assert all(p.energy_j > 0 and p.how for p in rows.values())


def test_without_ablation_always_large_is_the_large_tier_served_with_the_routed_rungs_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without `serve.ablation` the rung before routing is brute force (one at a time, no caches): always-large
    is the large tier served once more as the routed rung serves it, not that rung."""
    from joulepath import execute
    from joulepath.execute import Weights, ladder, tier_policies

    examples = ROUTED_EXAMPLES
    routing = threshold_routing(load_model("dummy:tiny-llama"))
    large = load_model("dummy:tiny-llama")
    serve = ServeSection(
        model="dummy:tiny-llama", max_batch=2, max_tokens=3, repeats=1, quantize="off", ablation=False,
        speculative="prompt_lookup",
    )  # fmt: skip
    steps = serve_interleaved(large, np.zeros(4), examples, serve, None, routing=routing)
    rungs = ladder(large, serve, Weights(large), routing)
    assert [s.lever for s in steps] == [r.lever for r in rungs] == ["brute force", "every lever"]
    served: list[tuple[str, object, int, object]] = []
    real = execute.replay

    def spy(loaded, name, max_batch, *args, **kwargs):  # type: ignore[no-untyped-def]
        served.append((name, loaded, max_batch, args[4] if len(args) > 4 else kwargs.get("config")))
        return real(loaded, name, max_batch, *args, **kwargs)

    monkeypatch.setattr(execute, "replay", spy)
    rows = {p.policy: p for p in tier_policies(steps, rungs, serve, np.zeros(4), examples, None)}
    assert rows["always-large"].how == "served once more on the large tier with the routed rung's settings"
    routed = rungs[-1]
    assert routed.config.speculative == "prompt_lookup" and routed.config.prefix_cache  # not brute force's
    assert ("always-large", routed.model, routed.max_batch, routed.config) in served
    assert rows["always-large"].small_tier_share == 0.0 and rows["always-large"].energy_j > 0


def test_a_gpu_lever_on_a_cpu_is_skipped_with_the_reason() -> None:
    from joulepath.execute import optimized_weights

    said: list[str] = []
    loaded = load_model("jp-large")
    weights = optimized_weights(loaded, ServeSection(quantize="fp8_dynamic"), said.append)
    assert weights.lever is None and weights.loaded is loaded  # served as loaded, nothing gated
    assert any("fp8_dynamic not available here" in s and "8.9" in s for s in said)


@pytest.mark.parametrize(
    ("threads", "first"),
    [
        (2, "int8_vnni"),  # AVX512-VNNI: equal to fbgemm at 2 threads, faster at 1; AVX2 (threaded): 1.05x (measured)
        (1, "int8_vnni"),
        (8, "int8_dynamic"),  # the threaded kernels are unmeasured past 2 threads: fbgemm's first
    ],
)
def test_the_auto_weight_lever_order_follows_threads(threads: int, first: str) -> None:
    from joulepath.execute import AUTO_LEVERS, auto_levers

    order = auto_levers(threads)
    assert order[0] == first and sorted(order) == sorted(AUTO_LEVERS)


SLICED = [Example("add", "easy", f"What is {k} + 1?", str(k + 1)) for k in range(6)]


def test_with_slices_each_repetition_serves_its_own_requests_and_accuracy_counts_them_all() -> None:
    serve = ServeSection(model="dummy:tiny-llama", max_batch=2, max_tokens=3, repeats=3, quantize="off", requests=6)
    assert serve.repeat_over == "slices" and serve.per_repetition == 2
    seen: list[str] = []
    steps = serve_interleaved(load_model("dummy:tiny-llama"), np.zeros(2), SLICED, serve, None, seen.append)
    for step in steps:  # repetition k: requests r(2k), r(2k+1), the same slice on every rung
        ids = [sorted(r.record.request_id for r in run.requests) for run in step.runs]
        assert ids == [["r0", "r1"], ["r2", "r3"], ["r4", "r5"]]
        assert len(step.answers) == 6
        assert step.accuracy == sum(r.correct for run in step.runs for r in run.requests) / 6
    assert any("requests 3-4 of 6" in m for m in seen if m.startswith("serving"))
    local = LocalComparison(
        "m", "cpu", steps[0].median, steps[-1].median, None, steps[0].runs, steps[-1].runs, ladder=tuple(steps)
    )
    assert {r.record.request_id for r in local.optimized_answers} == {f"r{k}" for k in range(6)}
    assert local.accuracy_baseline == steps[0].accuracy and local.accuracy_optimized == steps[-1].accuracy


def test_requests_for_gives_one_repetitions_arrivals_and_a_task_for_every_slice() -> None:
    from joulepath.execute import requests_for
    from joulepath.run import build_trace
    from joulepath.scenario import Scenario

    scenario = Scenario()
    trace = build_trace(scenario.workload)
    arrivals, examples = requests_for(trace, scenario.serve, scenario.workload.seed)
    assert scenario.serve.requests == 144 and len(arrivals) == 48 and len(examples) == 144
    assert len({id(e) for e in examples}) == 144  # no golden task drawn twice
    for k in range(3):  # each slice the golden mix: every (skill, level) cell twice
        cells = Counter((e.skill, e.level) for e in examples[48 * k : 48 * (k + 1)])
        assert len(cells) == 24 and set(cells.values()) == {2}
    same = scenario.serve.model_copy(update={"repeat_over": "same"})
    arrivals, examples = requests_for(trace, same, scenario.workload.seed)
    assert len(arrivals) == len(examples) == 144


def test_fewer_requests_than_slices_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="raise requests to at least 3, or set repeat_over = 'same'"):
        ServeSection(requests=2, repeats=3)
    assert ServeSection(requests=2, repeats=3, repeat_over="same").per_repetition == 2


def test_where_repetitions_share_a_request_its_answer_is_the_median_repetitions() -> None:
    from joulepath.results import answers

    serve = ServeSection(model="dummy:tiny-llama", max_batch=2, max_tokens=3, repeats=3, quantize="off")
    steps = serve_interleaved(load_model("dummy:tiny-llama"), np.zeros(2), SLICED[:2], serve, None)
    runs = steps[0].runs
    chosen = answers(runs)
    assert [r.record.request_id for r in chosen] == ["r0", "r1"]
    assert all(any(a is b for b in steps[0].median.requests) for a in chosen)


def test_tier_policies_cover_every_slice() -> None:
    from joulepath.execute import Weights, ladder, tier_policies

    small = load_model("dummy:tiny-llama")
    serve = ServeSection(model="dummy:tiny-llama", max_batch=2, max_tokens=3, repeats=2, quantize="off", requests=4)
    routing = threshold_routing(small, cascade_cut=-0.5)
    steps = serve_interleaved(small, np.zeros(2), ROUTED_EXAMPLES, serve, None, routing=routing)
    assert [len(run.requests) for run in steps[-1].runs] == [2, 2]
    rungs = ladder(small, serve, Weights(small), routing)
    rows = {p.policy: p for p in tier_policies(steps, rungs, serve, np.zeros(2), ROUTED_EXAMPLES, None)}
    assert rows["router"].small_tier_share == 0.5  # r0, r1 (the first slice) to the small tier; r2, r3 not
    assert rows["always-small"].small_tier_share == 1.0
    assert rows["always-large"].correct == sum(r.correct for r in steps[-2].answers)
