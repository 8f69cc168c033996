"""Forecasts: conformal intervals cover what they claim; the model beats seasonal naive where it should."""

import dataclasses

import numpy as np
import pytest

from joulepath.control import forecast as fc

pytestmark = pytest.mark.skipif(not fc.available(), reason="control extra (mlforecast, lightgbm) not installed")


def test_conformal_halfwidth_is_the_finite_sample_quantile_of_past_days() -> None:
    err = np.tile(np.arange(1.0, 11.0), 5)  # five "days" of ten steps, errors 1..10
    half = fc.conformal_halfwidth(err, steps_per_day=10, calibration_days=2, level=0.9)
    assert np.isnan(half[:20]).all()
    # 20 past errors: the ceil(21 x 0.9) / 20 = 0.95 quantile of two copies of 1..10
    assert half[20] == pytest.approx(np.quantile(np.tile(np.arange(1.0, 11.0), 2), 0.95))


def test_day_ahead_model_beats_seasonal_naive_and_covers_near_90_percent() -> None:
    rng = np.random.default_rng(0)
    hours = np.arange(24 * 120)
    weekly = 0.3 * (hours // 24 % 7 >= 5)  # a weekly pattern seasonal naive (one day back) misses
    y = 10 + np.sin(2 * np.pi * hours / 24) - weekly * 3 + rng.normal(0, 0.2, len(hours))
    cfg = fc.ForecastConfig(calibration_days=14, test_days=28, n_estimators=40)
    run = fc.evaluate({"load": y}, cfg)
    score = run.scores[0]
    assert score.n_points == 28 * 24
    assert score.model_mape_pct < score.seasonal_naive_mape_pct
    assert 0.8 <= score.coverage_frac <= 0.98
    np.testing.assert_allclose(run.y, y[-28 * 24 :])  # the held-out span, in time order


def test_next_step_forecast_scores_persistence_too() -> None:
    rng = np.random.default_rng(1)
    n = 96 * 60
    y = 5 + np.sin(2 * np.pi * np.arange(n) / 96) + np.cumsum(rng.normal(0, 0.01, n))
    cfg = fc.ForecastConfig(
        step_s=900.0,
        horizon_steps=1,
        lags=(1, 2, 96),
        seasonal_difference_steps=None,
        calibration_days=10,
        test_days=20,
        n_estimators=60,
    )
    score = fc.evaluate({"x": y}, cfg).scores[0]
    assert score.persistence_mape_pct is not None and score.model_mape_pct < score.seasonal_naive_mape_pct


def test_weekly_refit_follows_a_level_the_first_fit_never_saw() -> None:
    """Trees do not extrapolate: after a step up outside the training span's range, only a model refitted
    on the data up to each week keeps its error small."""
    rng = np.random.default_rng(2)
    hours = np.arange(24 * 90)
    y = 10 + np.sin(2 * np.pi * hours / 24) + rng.normal(0, 0.1, len(hours))
    y[24 * 50 :] += 8.0  # the step: at the calibration span's start (90 - 14 - 28 = 48 training days)
    base = fc.ForecastConfig(seasonal_difference_steps=None, calibration_days=14, test_days=28, n_estimators=40)
    once = fc.evaluate({"load": y}, dataclasses.replace(base, refit_every_days=None)).scores[0]
    weekly = fc.evaluate({"load": y}, base).scores[0]
    assert weekly.model_mape_pct < 0.5 * once.model_mape_pct


def test_refit_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="refit_every_days"):
        fc.ForecastConfig(refit_every_days=0)
