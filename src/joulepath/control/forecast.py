"""Forecasts of IT power, facility power, PUE and grid carbon intensity, with conformal intervals.

Model: LightGBM through mlforecast (lags, date features, a seasonal difference; optional extra
`joulepath[control]`). Chosen by measurement on this 2-core VM: on the five EIA carbon files a
statsforecast MSTL + AutoETS cross-validation did not finish in 400 s (numba JIT compilation plus the
fits), where mlforecast + LightGBM ran the study in 9-16 s and beat seasonal naive (benchmarks/RESULTS.md).
Baselines, scored on the same points: seasonal naive (the same time one day earlier) and, for the
next-interval forecast, persistence.

Two horizons (configs `DAY_AHEAD` for grid carbon, `DAY_AHEAD_LEVEL` for IT power, facility power and
PUE, `NEXT_15_MIN`):
- day ahead: issued at midnight for the next day's hours (24 steps of 1 h), recursively;
  `mlforecast.cross_validation`: a fit on the data before the calibration span, refitted every
  `refit_every_days` (a week) on all the data up to that midnight, as a site's forecaster is retrained
  in operation; one forecast a day over the calibration and test spans, each from the data up to its
  midnight. Weekly refits matter where the held-out weather leaves the training span's range (trees do
  not extrapolate): on an August-September validation span (trained on January-June, calibrated on July;
  the Leesburg year of benchmarks/control.py) the facility power's MAPE fell from 3.70 to 3.20 % and
  PUE's MAE from 0.027 to 0.012 (benchmarks/RESULTS.md, control, 2026-11-27).
- what each series is modelled as (chosen on that validation span, confirmed on the test span): IT and
  facility power by their level with hour and weekday features (a day's difference doubles the load's
  own noise, which is near independent a day apart); facility power and PUE also with day-ahead
  forecasts of the site's wet- and dry-bulb temperatures (what drives the cooling); grid carbon by its
  day's difference (levels drift with the season's generation mix).
- next interval: one step ahead (15 min); lags of at least one step need no recursion, so mlforecast
  builds the features for the whole span and LightGBM predicts the held-out rows at once.

Intervals: split conformal, rolling (Vovk et al. 2005; Angelopoulos & Bates 2021): each day's half-width
is the ceil((n+1) x 0.9)/n quantile of the absolute errors of the previous `calibration_days` days of
forecasts, errors that are known when the day's forecast is issued. Train span < calibration < test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

try:  # optional extra: the package imports without it, the functions below need it
    import lightgbm
    import mlforecast
    import pandas as pd
except ImportError:  # pragma: no cover - exercised where the extra is absent
    lightgbm = mlforecast = pd = None  # type: ignore[assignment]

START = "2022-01-01"  # the EIA files' year; the twin's weather is a typical year placed on the same axis


def available() -> bool:
    """Whether the forecasting extra (mlforecast, lightgbm, pandas) is installed."""
    return mlforecast is not None and lightgbm is not None


def _require() -> None:
    if not available():
        raise ImportError("forecasting needs the control extra: pip install 'joulepath[control]'")


@dataclass(frozen=True)
class ForecastConfig:
    """One forecasting setup. Steps are of the series' own resolution (`step_s`)."""

    step_s: float = 3600.0
    horizon_steps: int = 24  # 24 one-hour steps: day ahead
    lags: tuple[int, ...] = (1, 2, 24, 168)
    seasonal_difference_steps: int | None = 24  # model y(t) - y(t - 1 day); None: the level
    calibration_days: int = 28
    test_days: int = 92  # October to December
    refit_every_days: int | None = 7  # day ahead: retrain weekly on everything up to that day; None: once
    level: float = 0.9
    n_estimators: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 31
    seed: int = 0

    def __post_init__(self) -> None:
        if self.refit_every_days is not None and self.refit_every_days < 1:
            raise ValueError(f"refit_every_days must be None (fit once) or >= 1, got {self.refit_every_days}")

    @property
    def steps_per_day(self) -> int:
        return round(86400.0 / self.step_s)


DAY_AHEAD = ForecastConfig()
# IT power, facility power and PUE: their level (with weather forecasts as features where the cooling
# matters); measured on the Leesburg year, see the module docstring
DAY_AHEAD_LEVEL = ForecastConfig(seasonal_difference_steps=None)
NEXT_15_MIN = ForecastConfig(
    step_s=900.0, horizon_steps=1, lags=(1, 2, 3, 4, 96, 672), seasonal_difference_steps=None, refit_every_days=None
)


@dataclass(frozen=True)
class SeriesScore:
    """Errors of one series over the test span: the model against its baselines, same points."""

    series: str
    n_points: int
    model_mape_pct: float
    seasonal_naive_mape_pct: float
    model_mae: float
    seasonal_naive_mae: float
    coverage_frac: float  # share of test points inside the conformal interval
    persistence_mape_pct: float | None = None
    persistence_mae: float | None = None


@dataclass(frozen=True)
class ForecastRun:
    """Per test point: truth, model, baselines and the interval, in series order."""

    series: np.ndarray  # (n,) names
    y: np.ndarray
    model: np.ndarray
    seasonal_naive: np.ndarray
    persistence: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    scores: list[SeriesScore] = field(default_factory=list)


def long_frame(series: dict[str, np.ndarray], step_s: float, exog: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """mlforecast's long format: one row per (series, time); `exog` columns (one value per step, shared
    by every series, e.g. a weather forecast) are features known for the forecast's hours."""
    _require()
    frames = []
    for name, y in series.items():
        ds = pd.date_range(START, periods=len(y), freq=f"{int(step_s)}s")
        frames.append(pd.DataFrame({"unique_id": name, "ds": ds, "y": y} | dict(exog or {})))
    return pd.concat(frames, ignore_index=True)


def _model(cfg: ForecastConfig, scale: bool = True) -> mlforecast.MLForecast:
    from mlforecast.target_transforms import Differences, LocalStandardScaler

    reg = lightgbm.LGBMRegressor(
        n_estimators=cfg.n_estimators,
        learning_rate=cfg.learning_rate,
        num_leaves=cfg.num_leaves,
        random_state=cfg.seed,
        n_jobs=1,
        verbose=-1,
    )
    # one global model over all series: each is scaled to its own mean and sd first (W and PUE differ 1e6x)
    transforms: list[Any] = [Differences([cfg.seasonal_difference_steps])] if cfg.seasonal_difference_steps else []
    if scale:
        transforms.append(LocalStandardScaler())
    return mlforecast.MLForecast(
        models={"model": reg},
        freq=f"{int(cfg.step_s)}s",
        lags=list(cfg.lags),
        date_features=["hour", "day_of_week"],
        target_transforms=transforms,
    )


def conformal_halfwidth(abs_err: np.ndarray, steps_per_day: int, calibration_days: int, level: float) -> np.ndarray:
    """Rolling split-conformal half-widths, one per point: for each day, the finite-sample quantile of
    the previous `calibration_days` days' absolute errors (NaN until that many days exist)."""
    days = abs_err.reshape(-1, steps_per_day)
    half = np.full(len(days), np.nan)
    for d in range(calibration_days, len(days)):
        past = days[d - calibration_days : d].ravel()
        q = min(1.0, np.ceil((len(past) + 1) * level) / len(past))
        half[d] = np.quantile(past, q)
    return np.repeat(half, steps_per_day)


def _day_ahead_predictions(df: pd.DataFrame, cfg: ForecastConfig) -> pd.DataFrame:
    """A fit on the training span (refitted every `refit_every_days` on the data up to that day), then a
    forecast each midnight over calibration + test days."""
    n_windows = (cfg.calibration_days + cfg.test_days) * cfg.steps_per_day // cfg.horizon_steps
    refit: bool | int = False
    if cfg.refit_every_days:
        refit = max(1, cfg.refit_every_days * cfg.steps_per_day // cfg.horizon_steps)  # in windows
    cv = _model(cfg).cross_validation(
        df, n_windows=n_windows, h=cfg.horizon_steps, step_size=cfg.horizon_steps, refit=refit, static_features=[]
    )
    return cv.sort_values(["unique_id", "ds"]).reset_index(drop=True)


def _next_step_predictions(df: pd.DataFrame, cfg: ForecastConfig) -> pd.DataFrame:
    """One-step-ahead forecasts, one model per series on its raw values (no transform fitted on the
    held-out span): features from mlforecast, one LightGBM fit before the held-out span, then every
    held-out step at once (its lags are all observed)."""
    held_out_s = (cfg.calibration_days + cfg.test_days) * 86400
    cutoff = df["ds"].max() - pd.Timedelta(seconds=held_out_s - cfg.step_s)
    outs = []
    for _, one in df.groupby("unique_id", sort=False):
        fc = _model(cfg, scale=False)
        feats: pd.DataFrame = fc.preprocess(one, dropna=True, static_features=[])
        train, rest = feats[feats["ds"] < cutoff], feats[feats["ds"] >= cutoff]
        x_cols = [c for c in feats.columns if c not in ("unique_id", "ds", "y")]
        reg = fc.models["model"]
        reg.fit(train[x_cols], train["y"])
        out = rest[["unique_id", "ds", "y"]].copy()
        out["model"] = reg.predict(rest[x_cols])
        outs.append(out)
    return pd.concat(outs).sort_values(["unique_id", "ds"]).reset_index(drop=True)


def _score(
    name: str,
    y: np.ndarray,
    pred: np.ndarray,
    naive: np.ndarray,
    persist: np.ndarray,
    inside: np.ndarray,
    with_persistence: bool,
) -> SeriesScore:
    def mape(p: np.ndarray) -> float:
        return float(np.mean(np.abs(p - y) / np.abs(y)) * 100.0)

    def mae(p: np.ndarray) -> float:
        return float(np.mean(np.abs(p - y)))

    return SeriesScore(
        name,
        len(y),
        mape(pred),
        mape(naive),
        mae(pred),
        mae(naive),
        float(inside.mean()),
        mape(persist) if with_persistence else None,
        mae(persist) if with_persistence else None,
    )


def evaluate(
    series: dict[str, np.ndarray], cfg: ForecastConfig = DAY_AHEAD, exog: dict[str, np.ndarray] | None = None
) -> ForecastRun:
    """Forecast every series over its last `test_days` days (after `calibration_days` of calibration),
    trained on what comes before; score the model, seasonal naive and persistence on the same points.
    `exog`: forecasts of drivers (one value per step, e.g. the day-ahead wet bulb) the model may use."""
    df = long_frame(series, cfg.step_s, exog)
    day_ahead = cfg.horizon_steps > 1
    pred = _day_ahead_predictions(df, cfg) if day_ahead else _next_step_predictions(df, cfg)
    per = cfg.steps_per_day
    keep_steps = (cfg.calibration_days + cfg.test_days) * per
    run: dict[str, list[np.ndarray]] = {k: [] for k in ("series", "y", "model", "naive", "persist", "lo", "hi")}
    scores = []
    for name, full in series.items():
        g = pred[pred["unique_id"] == name].tail(keep_steps)
        y, p = g["y"].to_numpy(), g["model"].to_numpy()
        past = np.asarray(full, dtype=float)[len(full) - keep_steps - per : len(full) - per]  # one day earlier
        persist = np.asarray(full, dtype=float)[len(full) - keep_steps - 1 : len(full) - 1]  # one step earlier
        half = conformal_halfwidth(np.abs(y - p), per, cfg.calibration_days, cfg.level)
        test = slice(cfg.calibration_days * per, None)
        y, p, past, persist, half = y[test], p[test], past[test], persist[test], half[test]
        inside = np.abs(y - p) <= half
        scores.append(_score(name, y, p, past, persist, inside, not day_ahead))
        for key, arr in zip(run, (np.full(len(y), name), y, p, past, persist, p - half, p + half), strict=True):
            run[key].append(arr)
    cat = {k: np.concatenate(v) for k, v in run.items()}
    return ForecastRun(
        cat["series"], cat["y"], cat["model"], cat["naive"], cat["persist"], cat["lo"], cat["hi"], scores
    )
