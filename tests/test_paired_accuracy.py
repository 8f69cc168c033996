"""The paired interval of an accuracy difference (the headline's "within 1 point" is judged with it)."""

from __future__ import annotations

import pytest

from joulepath.results import LocalComparison, LocalRun, RequestRecord, ServedRequest, paired_difference_interval


def table(both: int, lost: int, gained: int, neither: int) -> tuple[list[bool], list[bool]]:
    """(before, after) answers: both right, right before only, right after only, neither."""
    before = [True] * (both + lost) + [False] * (gained + neither)
    after = [True] * both + [False] * lost + [True] * gained + [False] * neither
    return before, after


def test_the_interval_holds_the_difference_and_only_discordant_pairs_move_it() -> None:
    lo, hi = paired_difference_interval(*table(92, 3, 0, 33))  # the 2026-11-27 headline's 128 answers
    assert lo < -3 / 128 < hi and (100 * lo, 100 * hi) == pytest.approx((-5.69, 0.87), abs=0.01)
    lo_same, hi_same = paired_difference_interval(*table(95, 0, 0, 33))  # the same answers twice
    assert lo_same < 0 < hi_same and lo_same == pytest.approx(-hi_same)
    assert hi - lo > hi_same - lo_same  # discordance widens it


def test_a_clear_loss_excludes_zero_and_the_bounds_stay_in_range() -> None:
    lo, hi = paired_difference_interval(*table(50, 40, 0, 10))
    assert -1.0 <= lo < hi < 0
    assert paired_difference_interval(*table(0, 20, 0, 0))[0] >= -1.0
    assert paired_difference_interval([], []) == (-1.0, 1.0)
    with pytest.raises(ValueError, match="same questions"):
        paired_difference_interval([True], [True, False])


def served(rid: str, correct: bool) -> ServedRequest:
    record = RequestRecord(rid, 20, 4, 0.1, 0.01, 0.2, 0.1, "measured: test", "stop", 0)
    return ServedRequest(record, 0.0, "add", "easy", correct)


def test_the_comparison_pairs_answers_by_request() -> None:
    before = LocalRun("baseline", 1, (served("a", True), served("b", True), served("c", False)), 2.0, 1.0, "x", 2 / 3)
    after = LocalRun("optimized", 8, (served("c", False), served("b", False), served("a", True)), 2.0, 1.0, "x", 1 / 3)
    comparison = LocalComparison("m", "cpu", before, after, None)
    lo, hi = comparison.accuracy_delta_interval() or (0.0, 0.0)
    assert (lo, hi) == pytest.approx(paired_difference_interval([True, True, False], [True, False, False]))
