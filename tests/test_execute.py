"""The served-here comparison: each configuration served `serve.repeats` times, interleaved, and every
local ratio reported as the median and min-max of the paired repetitions."""

import numpy as np
import pytest

from joulepath.execute import median_run, serve_interleaved
from joulepath.model import load_model
from joulepath.quality.tasks import Example
from joulepath.results import LocalComparison
from joulepath.scenario import ServeSection


def test_configurations_are_served_interleaved_and_paired() -> None:
    examples = [Example("add", "easy", "What is 2 + 3?", "5"), Example("add", "easy", "What is 4 + 4?", "8")]
    serve = ServeSection(model="dummy:tiny-llama", max_batch=2, max_tokens=3, repeats=3)
    seen: list[str] = []
    baselines, optimizeds = serve_interleaved(
        load_model("dummy:tiny-llama"), np.zeros(2), examples, serve, None, seen.append
    )
    order = [m.split(": ", 1)[1].split(" (")[0] for m in seen]
    assert order == ["baseline", "optimized"] * 3  # A B A B A B
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
