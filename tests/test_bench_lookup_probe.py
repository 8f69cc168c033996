"""benchmarks/lookup_probe.py: its arms, its config and its golden-form scoring (the training itself is the
shipped trainer's, tested in tests/quality)."""

from __future__ import annotations

import pytest

from joulepath.bench.lookup_probe import EVAL_LINES, Arm, golden_form_scores, parse_arm, probe_config
from joulepath.model.checkpoint import zoo_path


def test_arms_parse_and_bad_ones_say_the_form() -> None:
    assert parse_arm("short-keys:0.5:1-4") == Arm("short-keys", 0.5, (1, 4))
    assert parse_arm("few-rows:0.5:4-4:75") == Arm("few-rows", 0.5, (4, 4), 75.0)
    bad_arms = ("short-keys:0.5", "a:b:1-4", "a:0.5:1", "a:0.5:x-4", "a:0.5:4-4:0", "a:0.5:4-4:2:3", "..:0.5:4-4")
    for bad in (*bad_arms, "a/b:0.5:4-4", ":0.5:4-4", "a:nan:4-4", "a:0.5:4-4:nan"):
        with pytest.raises(ValueError, match="NAME:ECHO:LO-HI"):
            parse_arm(bad)
    with pytest.raises(ValueError, match="lookup_key_digits"):  # the data mix checks the range
        probe_config(Arm("x", 0.5, (0, 4), 1.0), steps=10, seed=0)


def test_probe_config_is_lookup_only_with_the_arms_mix() -> None:
    cfg = probe_config(Arm("x", 0.25, (2, 3), 2.0), steps=100, seed=4)
    assert cfg.skills == ("lookup",) and cfg.safety_share == 0 and cfg.lookup_lines == (2, 4)
    assert cfg.lookup_echo == 0.25 and cfg.lookup_key_digits == (2, 3) and cfg.seed == 4
    assert cfg.data_rows == 100 * cfg.rows_per_step // 2  # each row seen twice


def test_golden_form_scores_are_shares_with_matched_among_copied() -> None:
    scores = golden_form_scores(zoo_path("jp-small"), docs=4, seed=0)
    assert set(scores) == {str(n) for n in EVAL_LINES}
    for n, g in scores.items():
        assert 0 <= g["exact"] <= g["copied"] <= 1 and g["chance_matched"] == pytest.approx(1 / int(n))
        assert g["matched"] is None if g["copied"] == 0 else g["matched"] == pytest.approx(g["exact"] / g["copied"])
