"""Every number's label comes from its own provenance, ratios are worded the right way round, result.json
is strict JSON with a provenance for every series, and every Parquet table has a provenance column.

These use a fabricated local comparison on top of the analytic main job (no engine run): the numbers
are chosen so that batching used 1.85x *more* energy, the case the report once called "0.54x less"."""

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from joulepath.report.html import config_table, render_report, summary_text
from joulepath.report.result_json import result_to_dict, write_json_atomic, write_result
from joulepath.report.telemetry import write_telemetry
from joulepath.report.wording import NO_DIFFERENCE, ratio_verdict, times_phrase
from joulepath.results import LocalComparison, LocalRun, RatioSpread, RequestRecord, RunResult, ServedRequest
from joulepath.run import run
from joulepath.scenario import parse_scenario

ESTIMATED = "estimated:cpu-utilisation x 4.38 W/core (catalog)"
TAG = re.compile(r'<span class="tag (\w+)" data-of="([^"]+)"')


def _run(name: str, energy_j: float, provenance: str, n_requests: int = 2, wall_s: float = 1.0) -> LocalRun:
    """A served configuration with `n_requests` requests of 10 output tokens each."""
    served = tuple(
        ServedRequest(RequestRecord(f"r{i}", 5, 10, 0.01, 0.002, 0.03, energy_j / n_requests, provenance, "stop", 0),
                      0.0, "add", "easy", True)
        for i in range(n_requests)
    )  # fmt: skip
    return LocalRun(name, 1 if name == "baseline" else 16, served, wall_s, energy_j, provenance, 1.0)


def _comparison(baseline_j: list[float], optimized_j: list[float], provenance: str = ESTIMATED) -> LocalComparison:
    baselines = tuple(_run("baseline", j, provenance) for j in baseline_j)
    optimizeds = tuple(_run("optimized", j, provenance) for j in optimized_j)
    return LocalComparison("jp-small", "cpu", baselines[0], optimizeds[0], None, baselines, optimizeds)


@pytest.fixture(scope="module")
def analytic() -> RunResult:
    return run(parse_scenario({"serve": {"enabled": False}, "facility": {"horizon_days": 7}}))


@pytest.fixture(scope="module")
def more_energy(analytic: RunResult) -> RunResult:
    """Batching used 1.85x more energy per token in every one of three repetitions (estimated meter)."""
    return dataclasses.replace(analytic, local=_comparison([1.0, 1.0, 1.0], [1.85, 1.8, 1.9]))


def test_a_ratio_below_one_is_worded_as_less_and_above_one_as_more() -> None:
    assert times_phrase(1.85, "more energy", "less energy") == "1.85x more energy"
    assert times_phrase(0.54, "more energy", "less energy") == "1.85x less energy"
    assert "0.54x" not in times_phrase(0.54, "more energy", "less energy")
    assert times_phrase(float("nan"), "more energy", "less energy").startswith("n/a")


def test_a_spread_that_includes_one_is_no_significant_difference() -> None:
    assert ratio_verdict(RatioSpread("j_per_token", (0.8, 1.1, 1.3), ESTIMATED)).startswith(NO_DIFFERENCE)
    clear = ratio_verdict(RatioSpread("j_per_token", (0.5, 0.6, 0.7), ESTIMATED))
    assert clear.startswith("1.67x less energy per token") and "0.50–0.70" in clear
    assert "no spread" in ratio_verdict(RatioSpread("j_per_token", (0.5,), ESTIMATED))


def test_the_summary_says_more_when_batching_used_more_energy(more_energy: RunResult) -> None:
    text = summary_text(more_energy)
    assert "1.85x more energy per token" in text and "less energy" not in text
    assert _local(more_energy).ratio("j_per_token").values == pytest.approx((1.85, 1.8, 1.9))


def test_estimated_energy_is_never_tagged_measured(more_energy: RunResult) -> None:
    page = render_report(more_energy)
    tags = TAG.findall(page)
    energy = [kind for kind, what in tags if "energy" in what or "carbon" in what]
    assert energy and "measured" not in energy, tags
    assert ("measured", "time") in tags  # time is measured (perf_counter), and says so
    assert not re.search(r'class="tag \w+">', page), "every tag names what it labels"


def test_measured_energy_is_tagged_measured(analytic: RunResult) -> None:
    measured = dataclasses.replace(analytic, local=_comparison([1.0, 1.1, 1.2], [0.5, 0.5, 0.6], "measured:rapl"))
    row = next(r for r in config_table(measured).split("<tr>") if "energy per output token (this machine)" in r)
    assert 'class="tag measured" data-of="energy"' in row


def test_result_json_is_strict_and_every_series_has_a_provenance(more_energy: RunResult, tmp_path: Path) -> None:
    empty = dataclasses.replace(_local(more_energy), baseline=_run("baseline", 1.0, ESTIMATED, n_requests=0))
    path = write_result(dataclasses.replace(more_energy, local=empty), tmp_path)  # p99 of no requests: NaN
    doc = json.loads(path.read_text(), parse_constant=_refuse)
    assert doc["local"]["baseline"]["ttft_p99_s"] is None and "null" in doc["null_means"]
    unlabelled = list(_series_without_provenance(doc))
    assert not unlabelled, unlabelled
    ratio = doc["local"]["ratios"]["j_per_token"]
    assert ratio["median"] == pytest.approx(1.85) and not ratio["no_significant_difference"]
    assert ratio["verdict"].startswith("1.85x more energy per token")
    assert len(doc["local"]["optimized"]["repetitions"]) == 3 and doc["local"]["repeats"] == 3
    assert doc["local"]["optimized"]["provenance"]["energy"] == ESTIMATED


def test_result_dict_has_no_non_finite_number(more_energy: RunResult) -> None:
    empty = dataclasses.replace(_local(more_energy), optimized=_run("optimized", 1.0, ESTIMATED, n_requests=0))
    json.dumps(result_to_dict(dataclasses.replace(more_energy, local=empty)), allow_nan=False)


def test_every_parquet_table_carries_its_provenance(more_energy: RunResult, tmp_path: Path) -> None:
    folder = write_telemetry(more_energy, tmp_path)
    for name in ("requests", "facility", "profile"):
        table = pq.read_table(folder / f"{name}.parquet")
        assert "provenance" in table.column_names, name
        assert all(p for p in table.column("provenance").to_pylist()), name
    facility = pq.read_table(folder / "facility.parquet").column("provenance").to_pylist()
    assert facility[0].startswith("estimated: facility twin") and "t_outdoor_c: synthetic" in facility[0]
    requests = pq.read_table(folder / "requests.parquet").column("provenance").to_pylist()
    assert f"energy_j: {ESTIMATED}" in requests[0] and "ttft_s" in requests[0]


def _local(result: RunResult) -> LocalComparison:
    assert result.local is not None
    return result.local


def _refuse(constant: str) -> Any:
    raise ValueError(f"not strict JSON: {constant}")


def _series_without_provenance(node: Any, path: str = "") -> Any:
    """Paths of numeric lists (two or more numbers) whose dict has no `provenance` naming them."""
    if isinstance(node, dict):
        label = node.get("provenance")
        for key, value in node.items():
            if _is_series(value) and not (isinstance(label, str) or (isinstance(label, dict) and key in label)):
                yield f"{path}.{key}"
            yield from _series_without_provenance(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _series_without_provenance(value, f"{path}[{i}]")


def _is_series(value: Any) -> bool:
    numbers = isinstance(value, list) and len(value) >= 2
    return numbers and all((isinstance(v, int | float) and not isinstance(v, bool)) or v is None for v in value)


def test_json_writer_turns_non_finite_numbers_into_null(tmp_path: Path) -> None:
    path = write_json_atomic(tmp_path / "x.json", {"a": float("nan"), "b": [float("inf")], "c": np.float64("-inf")})
    assert json.loads(path.read_text(), parse_constant=_refuse) == {"a": None, "b": [None], "c": None}


def test_the_tier_comparison_is_in_the_report_and_result_json(more_energy: RunResult) -> None:
    from joulepath.results import TierPolicy

    policies = (
        TierPolicy("always-large", 0.8, 0.0, 8, 4.0, "as served"),
        TierPolicy("always-small", 0.7, 1.0, 7, 1.0, "served once more"),
        TierPolicy("router", 0.8, 0.6, 8, 2.0, "as served"),
        TierPolicy("oracle", 0.0, 0.9, 0, 0.0, "composed"),  # no correct answer: J per correct has no value
    )
    routed = dataclasses.replace(more_energy, local=dataclasses.replace(_local(more_energy), tier_policies=policies))
    page = render_report(routed)
    assert "Tiered processing on the served requests" in page and "2.00x" in page  # router: 0.25 vs 0.5 J/correct
    table = page[page.index("Tiered processing") :]
    assert 'class="tag estimated" data-of="energy"' in table
    doc = json.loads(json.dumps(result_to_dict(routed)), parse_constant=_refuse)
    rows = {r["policy"]: r for r in doc["local"]["tier_policies"]}
    assert rows["router"]["joules_per_correct"] == pytest.approx(0.25) and rows["oracle"]["joules_per_correct"] is None
