"""Carbon- and cost-aware shifting of batch work, dispatched jointly with a battery.

Hourly, over a year. The load splits into interactive work (never moved) and batch jobs (the deferrable
share, one job per arrival hour with its own deadline). Three policies on the same jobs and grid signals:

- `run_now`: every job runs in its arrival hour, the battery idle (the baseline);
- `oracle`: the perfect-foresight optimum, one linear program over the whole year (HiGHS via
  `scipy.optimize.linprog`): the upper bound on any policy's savings;
- `receding_horizon`: the same linear program over the next `horizon_h` hours on forecasts (carbon:
  `diurnal_ar1_forecast`; interactive load and future batch arrivals: the same hour a week (at first a day) earlier;
  price: the tariff, known ahead), re-solved every `replan_h` hours (1: the benchmark's hourly policy; 24: the
  main job's daily one, ~24x faster), its hours executed one by one in between.

`control.shift_year.shift_facility_year` wraps the three for the main job: a facility's hourly wall power
and its grid signals in, the shifted load, battery state of charge, CO2 and cost of each policy out.

Objective (all three scored on it): grid energy x (alpha x carbon / mean carbon + (1 - alpha) x price /
mean price), i.e. carbon and energy cost each relative to its own yearly mean, weighted by
`carbon_weight`. Grid import = load + charge - discharge >= 0 (no export); load <= capacity each hour.

    >>> import numpy as np
    >>> load_w = np.full(48, 1e6)
    >>> ci = np.tile(np.r_[np.full(12, 400.0), np.full(12, 200.0)], 2)
    >>> price = np.full(48, 0.1)
    >>> p = shift_problem(load_w, ci, price, ShiftConfig(capacity_frac_of_peak=1.5))
    >>> base, best = run_now(p), oracle(p)
    >>> bool(best.co2_kg < base.co2_kg), best.missed_jobs
    (True, 0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from joulepath.facility.supply import StorageConfig

KG_PER_G = 1e-3
KWH_PER_WH = 1e-3


@dataclass(frozen=True)
class ShiftConfig:
    """Shifting and storage settings (every default is an assumption, named in the benchmark)."""

    deferrable_frac: float = 0.25  # share of each hour's load that is batch work
    min_slack_h: int = 12  # each job's deadline: arrival + a slack drawn from [min, max] hours
    max_slack_h: int = 24
    capacity_frac_of_peak: float = 1.0  # the fleet can draw at most this x the run-now peak
    battery_hours: float = 4.0  # energy / power
    battery_power_frac_of_mean: float = 0.25  # battery power rating / mean load
    carbon_weight: float = 0.5  # alpha in the objective; 1 - alpha on energy cost
    horizon_h: int = 48  # the online policy's look-ahead (>= max_slack_h: every job ends inside it)
    replan_h: int = 1  # the online policy re-plans every this many hours, executing its plan in between
    capacity_margin_frac: float = 0.05  # the online policy plans future hours this much under capacity
    guard_margin_frac: float = 0.10  # its deadline guard assumes later hours this much tighter still
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.min_slack_h <= self.max_slack_h <= self.horizon_h:
            raise ValueError("need 1 <= min_slack_h <= max_slack_h <= horizon_h")
        if not 1 <= self.replan_h <= self.horizon_h:
            raise ValueError("need 1 <= replan_h <= horizon_h")
        if self.battery_hours < 0 or self.battery_power_frac_of_mean < 0:
            raise ValueError("battery_hours and battery_power_frac_of_mean must be >= 0")
        if not 0.0 <= self.deferrable_frac <= 1.0 or not 0.0 <= self.carbon_weight <= 1.0:
            raise ValueError("deferrable_frac and carbon_weight must be in [0, 1]")


@dataclass(frozen=True)
class Battery:
    """A battery sized from the load (Wh, W), with `facility.supply.StorageConfig`'s efficiencies and
    state-of-charge bounds. It starts and must end at mid charge."""

    energy_wh: float
    power_w: float
    charge_eff: float
    discharge_eff: float
    soc_min_wh: float
    soc_max_wh: float

    @property
    def soc_mid_wh(self) -> float:
        return (self.soc_min_wh + self.soc_max_wh) / 2.0


def battery_for(mean_load_w: float, cfg: ShiftConfig, storage: StorageConfig | None = None) -> Battery:
    """A `cfg.battery_hours` battery rated at `cfg.battery_power_frac_of_mean` x the mean load (none: 0 h)."""
    s = storage or StorageConfig()
    power_w = cfg.battery_power_frac_of_mean * mean_load_w if cfg.battery_hours > 0 else 0.0
    energy_wh = power_w * cfg.battery_hours
    return Battery(
        energy_wh,
        power_w,
        s.charge_efficiency,
        s.discharge_efficiency,
        s.soc_min_frac * energy_wh,
        s.soc_max_frac * energy_wh,
    )


@dataclass(frozen=True)
class BatchJobs:
    """Deferrable jobs: job j arrives at hour `arrival_h[j]`, needs `energy_wh[j]`, and must finish
    before hour `deadline_h[j]` (it may run in hours arrival .. deadline - 1)."""

    arrival_h: np.ndarray
    energy_wh: np.ndarray
    deadline_h: np.ndarray


@dataclass(frozen=True)
class ShiftProblem:
    """One year (or span) of hourly inputs, the jobs and the battery. Power in W = Wh per hour."""

    interactive_w: np.ndarray
    jobs: BatchJobs
    carbon_g_per_kwh: np.ndarray
    price_usd_per_kwh: np.ndarray
    capacity_w: float
    battery: Battery
    cfg: ShiftConfig

    @property
    def n_hours(self) -> int:
        return len(self.interactive_w)

    def weights_per_wh(self, carbon: np.ndarray, price: np.ndarray) -> np.ndarray:
        """The objective's weight of one Wh drawn from the grid in each hour (dimensionless per Wh)."""
        a = self.cfg.carbon_weight
        return a * carbon / float(np.mean(self.carbon_g_per_kwh)) + (1 - a) * price / float(
            np.mean(self.price_usd_per_kwh)
        )


def shift_problem(
    load_w: np.ndarray, carbon_g_per_kwh: np.ndarray, price_usd_per_kwh: np.ndarray, cfg: ShiftConfig
) -> ShiftProblem:
    """Split an hourly load into interactive work and one batch job per hour (seeded slacks)."""
    n = len(load_w)
    rng = np.random.default_rng(cfg.seed)
    slack_h = rng.integers(cfg.min_slack_h, cfg.max_slack_h + 1, n)
    arrival = np.arange(n)
    jobs = BatchJobs(arrival, cfg.deferrable_frac * load_w, np.minimum(arrival + slack_h, n))
    return ShiftProblem(
        (1.0 - cfg.deferrable_frac) * load_w,
        jobs,
        np.asarray(carbon_g_per_kwh[:n], dtype=float),
        np.asarray(price_usd_per_kwh[:n], dtype=float),
        cfg.capacity_frac_of_peak * float(np.max(load_w)),
        battery_for(float(np.mean(load_w)), cfg),
        cfg,
    )


@dataclass(frozen=True)
class ShiftOutcome:
    """What one policy did, hour by hour, and its totals (estimated from the inputs' series)."""

    policy: str
    batch_w: np.ndarray  # batch work run in each hour
    charge_w: np.ndarray
    discharge_w: np.ndarray
    soc_wh: np.ndarray  # at the end of each hour
    grid_w: np.ndarray  # import: interactive + batch + charge - discharge
    co2_kg: float
    cost_usd: float
    objective: float
    missed_jobs: int  # jobs not finished by their deadline
    late_energy_wh: float  # their work done after the deadline
    solves: int = 0  # linear programs solved


def _outcome(
    p: ShiftProblem,
    policy: str,
    batch_w: np.ndarray,
    charge_w: np.ndarray,
    discharge_w: np.ndarray,
    missed_jobs: int = 0,
    late_energy_wh: float = 0.0,
    solves: int = 0,
) -> ShiftOutcome:
    """Totals of one policy's hourly schedule, scored on the true carbon and price."""
    b = p.battery
    soc = b.soc_mid_wh + np.cumsum(b.charge_eff * charge_w - discharge_w / b.discharge_eff)
    grid = p.interactive_w + batch_w + charge_w - discharge_w
    co2 = float(np.sum(grid * p.carbon_g_per_kwh) * KWH_PER_WH * KG_PER_G)
    cost = float(np.sum(grid * p.price_usd_per_kwh) * KWH_PER_WH)
    objective = float(np.sum(grid * p.weights_per_wh(p.carbon_g_per_kwh, p.price_usd_per_kwh)))
    return ShiftOutcome(
        policy, batch_w, charge_w, discharge_w, soc, grid, co2, cost, objective, missed_jobs, late_energy_wh, solves
    )


def run_now(p: ShiftProblem) -> ShiftOutcome:
    """The baseline: each job in its arrival hour, the battery idle."""
    batch = np.bincount(p.jobs.arrival_h, weights=p.jobs.energy_wh, minlength=p.n_hours)
    zero = np.zeros(p.n_hours)
    return _outcome(p, "run-now", batch, zero, zero.copy())


@dataclass(frozen=True)
class _Plan:
    x_wh: np.ndarray  # per (job, hour) pair, in `pairs` order
    pairs_job: np.ndarray
    pairs_hour: np.ndarray  # relative to the plan's first hour
    charge_w: np.ndarray
    discharge_w: np.ndarray


def _pairs(arrival: np.ndarray, deadline: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (job, hour) a job may run in, hours clipped to 0 .. n - 1."""
    lo, hi = np.clip(arrival, 0, n), np.clip(deadline, 0, n)
    lengths = np.maximum(hi - lo, 0)
    job = np.repeat(np.arange(len(arrival)), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return job, np.repeat(lo, lengths) + offsets


def solve_plan(
    interactive_w: np.ndarray,
    jobs: BatchJobs,
    weights_per_wh: np.ndarray,
    capacity_w: float | np.ndarray,
    battery: Battery,
    soc0_wh: float,
) -> _Plan | None:
    """The linear program over `len(interactive_w)` hours from hour 0 (job hours relative to it):
    minimise sum(weight x grid) s.t. each job's energy is run inside its window, load <= capacity,
    grid >= 0, the battery's state of charge in bounds and back to at least mid charge at the end.
    Variables: x (job, hour) pairs, then charge, discharge and state of charge per hour. None if
    infeasible."""
    n, b = len(interactive_w), battery
    job, hour = _pairs(jobs.arrival_h, jobs.deadline_h, n)
    m, nj = len(job), len(jobs.energy_wh)
    ch, dis, soc = m, m + n, m + 2 * n  # first column of each hourly block
    cols, pair = np.arange(n), np.arange(m)
    shape = (nj + n, m + 3 * n)  # equalities: one row per job, then one per hour
    # each job's energy: sum over its hours = energy; state of charge:
    # soc_t - soc_{t-1} - eff_c charge_t + discharge_t / eff_d = 0 (soc_{-1} = soc0)
    rows = np.r_[job, nj + np.r_[cols, cols[1:], cols, cols]]
    data = np.r_[np.ones(m), np.ones(n), -np.ones(n - 1), -b.charge_eff * np.ones(n), np.ones(n) / b.discharge_eff]
    idx = np.r_[pair, soc + cols, soc + cols[:-1], ch + cols, dis + cols]
    a_eq = sp.csr_matrix((data, (rows, idx)), shape=shape)  # one build: per-block matrices cost more than the solve
    b_eq = np.r_[jobs.energy_wh, soc0_wh, np.zeros(n - 1)]
    # load <= capacity: sum_j x_jt <= capacity - interactive_t (rows 0 .. n - 1);
    # grid >= 0: -sum_j x_jt - charge_t + discharge_t <= interactive_t (rows n .. 2n - 1)
    rows = np.r_[hour, n + hour, n + cols, n + cols]
    data = np.r_[np.ones(m), -np.ones(m), -np.ones(n), np.ones(n)]
    idx = np.r_[pair, pair, ch + cols, dis + cols]
    a_ub = sp.csr_matrix((data, (rows, idx)), shape=(2 * n, m + 3 * n))
    cost = np.r_[weights_per_wh[hour], weights_per_wh, -weights_per_wh, np.zeros(n)]
    lower = np.r_[np.zeros(m + 2 * n), np.full(n, b.soc_min_wh)]
    lower[-1] = min(b.soc_mid_wh, soc0_wh + n * b.power_w * b.charge_eff)  # back to mid charge, if it can be
    upper = np.r_[np.full(m, np.inf), np.full(2 * n, b.power_w), np.full(n, b.soc_max_wh)]
    res = linprog(
        cost,
        A_ub=a_ub,
        b_ub=np.r_[capacity_w - interactive_w, interactive_w],
        A_eq=a_eq,
        b_eq=b_eq,
        bounds=np.c_[lower, upper],
        # dual simplex without presolve: ~2x faster on these small, well-posed programs (measured, 48 h and a year)
        method="highs-ds",
        options={"presolve": False},
    )
    if res.status != 0:
        return None
    return _Plan(res.x[:m], job, hour, res.x[ch : ch + n], res.x[dis : dis + n])


def oracle(p: ShiftProblem) -> ShiftOutcome:
    """Perfect foresight: the whole span's linear program on the true carbon, price and load."""
    weights = p.weights_per_wh(p.carbon_g_per_kwh, p.price_usd_per_kwh)
    plan = solve_plan(p.interactive_w, p.jobs, weights, p.capacity_w, p.battery, p.battery.soc_mid_wh)
    if plan is None:
        raise ValueError("the shifting problem is infeasible even with perfect foresight (capacity too low)")
    batch = np.bincount(plan.pairs_hour, weights=plan.x_wh, minlength=p.n_hours)
    return _outcome(p, "oracle", batch, plan.charge_w, plan.discharge_w, solves=1)


def diurnal_ar1_forecast(history: np.ndarray, horizon_h: int, days: int = 7, ar1: float = 0.95) -> np.ndarray:
    """Next `horizon_h` hours after `history` (hourly, its last value the latest observed): the mean of
    the last `days` days at each hour of day, plus the latest deviation from that profile decaying by
    `ar1` per hour (an AR(1) on the deviation; `ar1` assumed). Falls back to the last value with less
    than one day of history."""
    n = len(history)
    if n < 24:
        return np.full(horizon_h, history[-1] if n else 0.0)
    d = min(days, n // 24)
    profile = history[n - 24 * d :].reshape(d, 24).mean(axis=0)  # (24,): row k is hour n + k (mod 24)
    ahead = np.arange(horizon_h)
    deviation = history[-1] - profile[23]  # the latest hour, n - 1
    return profile[ahead % 24] + deviation * ar1 ** (ahead + 1)


def _season_lag_h(t: int) -> int:
    """The seasonal-persistence lag for load forecasts at hour t: one week once a week is known (the
    weekend dip), else one day."""
    return 168 if t >= 168 else 24


def _persistence(series: np.ndarray, t: int, horizon: int) -> np.ndarray:
    """Forecast of `series` for hours t .. t + horizon - 1: the latest known value a whole number of
    seasonal lags earlier (hours before t are known)."""
    lag = _season_lag_h(t)
    if lag <= t and horizon <= lag:  # the usual case, as a slice (this runs every hour)
        return series[t - lag : t - lag + horizon].copy()
    hours = t + np.arange(horizon)
    known = hours - lag * np.maximum(np.ceil((hours - t + 1) / lag), 1).astype(int)
    return np.where(known >= 0, series[np.maximum(known, 0)], series[min(t, len(series) - 1)])


@dataclass
class _Pending:
    """Jobs still to run in the online policy (mutable: the policy's own state)."""

    remaining_wh: np.ndarray
    missed: np.ndarray  # bool per job


def _forecast_arrivals(p: ShiftProblem, t: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch jobs forecast to arrive in hours t + 1 .. t + h - 1 (absolute hours): the job that arrived a
    whole number of seasonal lags earlier (`_persistence`), with its energy and slack (one job per hour,
    as `shift_problem` makes them); deadlines clipped to the span's end. (arrival, energy Wh, deadline)."""
    j = p.jobs
    future = np.arange(t + 1, t + h)
    lag = _season_lag_h(t)
    if lag <= t and h <= lag:  # the usual case, as a slice (this runs every hour)
        past: np.ndarray | slice = slice(t + 1 - lag, t + h - lag)
    else:
        back = future - lag * np.maximum(np.ceil((future - t + 1) / lag), 1).astype(int)
        future, past = future[back >= 0], back[back >= 0]
    slack = j.deadline_h[past] - j.arrival_h[past]
    return future, j.energy_wh[past], np.minimum(future + slack, p.n_hours)


def _planning_jobs(p: ShiftProblem, st: _Pending, t: int, h: int) -> tuple[BatchJobs, np.ndarray]:
    """Arrived unfinished jobs (overdue ones due now) and forecast arrivals (`_forecast_arrivals`), relative
    to hour t; returns the jobs and the real job ids of the first rows."""
    j = p.jobs
    real = np.flatnonzero((j.arrival_h <= t) & (st.remaining_wh > 1e-6))
    future, energy, due = _forecast_arrivals(p, t, h)
    arrival = np.r_[np.full(len(real), 0), future - t]
    deadline = np.r_[np.maximum(j.deadline_h[real] - t, 1), due - t]
    return BatchJobs(arrival, np.r_[st.remaining_wh[real], energy], np.minimum(deadline, h)), real


def _surge(series: np.ndarray, t: int, hours: int = 3) -> float:
    """How far the last `hours` hours of `series` (up to hour t) came in above their persistence forecast,
    as a factor >= 1: the deadline guard scales its forecasts by it, so a surge the forecasts do not see
    does not eat the room the pending work needs."""
    lag = _season_lag_h(t)
    if t - hours + 1 - lag < 0:
        return 1.0
    seen = float(series[t - hours + 1 : t + 1].sum())
    forecast = float(series[t - hours + 1 - lag : t + 1 - lag].sum())
    return max(seen / forecast, 1.0) if forecast > 0 else 1.0


def _required_now_wh(p: ShiftProblem, st: _Pending, real: np.ndarray, t: int) -> float:
    """Batch work that must run in hour t so that every pending job can still meet its deadline if the
    coming hours are tight: each later hour's room is capacity less the guard margin, less the forecast
    interactive load, and the forecast arrivals due within the look-ahead take their share of it (near
    the span's end, with short slacks or in a long busy stretch they compete with pending work); both
    forecasts scaled up by the latest surge (`_surge`). Earliest deadline first:
    max over k of (work due by hour t + k + 1) - (room in hours t + 1 .. t + k)."""
    if not len(real):
        return 0.0
    due_h = p.jobs.deadline_h[real] - t - 1  # hours left after this one
    span = max(int(due_h.max()) + 1, p.cfg.horizon_h)  # arrivals due later still compete for the same room
    level = _surge(p.interactive_w, t)
    _, new_wh, new_due = _forecast_arrivals(p, t, span)
    new_wh = new_wh * level
    soon = new_due - t - 1 < span
    due = np.concatenate((np.clip(due_h, 0, None), new_due[soon] - t - 1))
    work = np.cumsum(np.bincount(due, weights=np.concatenate((st.remaining_wh[real], new_wh[soon])), minlength=span))
    ahead = _persistence(p.interactive_w, t + 1, span) * level
    room = np.maximum(p.capacity_w * (1.0 - p.cfg.guard_margin_frac) - ahead, 0.0)
    room_before = np.concatenate(([0.0], np.cumsum(room)))[:span]  # hours t + 1 .. t + k; np.r_ is slow per hour
    return max(float(np.max(work - room_before)), 0.0)


def _execute_hour(p: ShiftProblem, st: _Pending, budget_wh: float, t: int) -> tuple[float, float]:
    """Run hour t's planned batch energy, topped up to what the deadlines require (`_required_now_wh`),
    on the pending jobs earliest deadline first, within capacity; mark the jobs that miss their deadline.
    (Any hourly total a plan allows is met by running it earliest deadline first, so the plan's hourly
    totals are all the execution needs, whichever jobs actually arrived.) Returns the batch energy run and
    the part of it that was already late (Wh)."""
    j = p.jobs
    real = np.flatnonzero((j.arrival_h <= t) & (st.remaining_wh > 1e-6))
    if not len(real):
        return 0.0, 0.0
    order = real[np.argsort(j.deadline_h[real], kind="stable")]
    room = max(p.capacity_w - p.interactive_w[t], 0.0)
    amount = min(max(budget_wh, _required_now_wh(p, st, real, t)), room)
    run = np.diff(np.minimum(np.concatenate(([0.0], np.cumsum(st.remaining_wh[order]))), amount))  # EDF
    late_wh = float(run[st.missed[order]].sum())
    st.remaining_wh[order] -= run
    late = real[(j.deadline_h[real] <= t + 1) & (st.remaining_wh[real] > 1e-6)]
    st.missed[late] = True
    return float(run.sum()), late_wh


def _battery_step(b: Battery, soc_wh: float, charge_w: float, discharge_w: float, load_w: float) -> tuple[float, float]:
    """The planned hour's charge and discharge, clipped to the power rating, the state-of-charge bounds
    and no export (discharge <= load)."""
    discharge = min(max(discharge_w, 0.0), b.power_w, (soc_wh - b.soc_min_wh) * b.discharge_eff, load_w)
    charge = min(max(charge_w, 0.0), b.power_w, (b.soc_max_wh - soc_wh) / b.charge_eff)
    return max(charge, 0.0), max(discharge, 0.0)


@dataclass(frozen=True)
class _Segment:
    """A plan's first `replan_h` hours, kept until the next plan."""

    job_hour_wh: np.ndarray  # (rows, hours): planned batch energy per planning job and hour
    job_id: np.ndarray  # (rows,): the real job of each row (a forecast arrival's: the job arriving that hour)
    forecast_wh: np.ndarray  # (rows,): each row's energy in the plan
    n_pending: int  # the first rows are jobs already pending at the plan (their energy known, scale 1)
    charge_w: np.ndarray  # (hours,)
    discharge_w: np.ndarray  # (hours,)

    def budget_wh(self, p: ShiftProblem, k: int) -> float:
        """Batch energy planned for the segment's hour k, each row scaled to its job's actual size (known
        by then for every row the plan runs in that hour: a job runs only once it has arrived)."""
        scale = p.jobs.energy_wh[self.job_id] / np.maximum(self.forecast_wh, 1e-9)
        scale[: self.n_pending] = 1.0
        return float(self.job_hour_wh[:, k] @ np.where(self.forecast_wh > 0, scale, 0.0))


def _plan_ahead(p: ShiftProblem, st: _Pending, t: int, soc_wh: float) -> _Segment:
    """Solve the look-ahead program at hour t on forecasts; keep its next `replan_h` hours (hour t first).
    If it is infeasible with the forecast arrivals, solve it without them and keep only hour t (the
    arrivals need the next plan); if still infeasible, run all pending work in hour t, earliest deadline
    first, within capacity."""
    h = min(p.cfg.horizon_h, p.n_hours - t)
    carbon = diurnal_ar1_forecast(p.carbon_g_per_kwh[:t], h) if t else np.full(h, p.carbon_g_per_kwh.mean())
    weights = p.weights_per_wh(carbon, p.price_usd_per_kwh[t : t + h])
    interactive = _persistence(p.interactive_w, t, h)
    interactive[0] = p.interactive_w[t]  # the current hour's interactive power is observed (nowcast)
    # forecast hours keep a margin: the interactive load may come in above its forecast
    capacity_w = np.r_[p.capacity_w, np.full(h - 1, p.capacity_w * (1.0 - p.cfg.capacity_margin_frac))]
    jobs, real = _planning_jobs(p, st, t, h)
    # the job arriving in each forecast arrival's hour (one job per hour, as `shift_problem` makes them)
    job_id = np.r_[real, np.searchsorted(p.jobs.arrival_h, t + jobs.arrival_h[len(real) :])]
    for keep, hours in ((len(jobs.energy_wh), min(p.cfg.replan_h, h)), (len(real), 1)):
        sub = BatchJobs(jobs.arrival_h[:keep], jobs.energy_wh[:keep], jobs.deadline_h[:keep])
        plan = solve_plan(interactive, sub, weights, capacity_w, p.battery, soc_wh)
        if plan is not None:
            now = plan.pairs_hour < hours
            x = np.zeros((keep, hours))
            np.add.at(x, (plan.pairs_job[now], plan.pairs_hour[now]), plan.x_wh[now])
            return _Segment(x, job_id[:keep], sub.energy_wh, len(real), plan.charge_w[:hours], plan.discharge_w[:hours])
    pending = st.remaining_wh[real]
    return _Segment(pending[:, None].copy(), real, pending.copy(), len(real), np.zeros(1), np.zeros(1))


def receding_horizon(p: ShiftProblem) -> ShiftOutcome:
    """The online policy: every `cfg.replan_h` hours, the look-ahead program on forecasts; its hours up to
    the next plan executed one by one (batch work within capacity and topped up to what deadlines need,
    the battery within its bounds). `replan_h = 1` re-plans every hour (the benchmark's policy); 24 plans
    once a day, ~24x fewer solves (the main job's policy)."""
    n, b = p.n_hours, p.battery
    st = _Pending(p.jobs.energy_wh.astype(float).copy(), np.zeros(len(p.jobs.energy_wh), dtype=bool))
    batch, charge, discharge = np.zeros(n), np.zeros(n), np.zeros(n)
    soc, solves, late_wh = b.soc_mid_wh, 0, 0.0
    plan_t, seg = 0, _Segment(np.zeros((0, 0)), np.zeros(0, dtype=int), np.zeros(0), 0, np.zeros(0), np.zeros(0))
    for t in range(n):  # sequential by nature: each hour's state depends on the last
        if t - plan_t >= len(seg.charge_w):
            plan_t, seg = t, _plan_ahead(p, st, t, soc)
            solves += 1
        k = t - plan_t
        batch[t], late = _execute_hour(p, st, seg.budget_wh(p, k), t)
        late_wh += late
        charge[t], discharge[t] = _battery_step(
            b, soc, seg.charge_w[k], seg.discharge_w[k], p.interactive_w[t] + batch[t]
        )
        soc += b.charge_eff * charge[t] - discharge[t] / b.discharge_eff
    _finish_overdue(p, st, batch)
    name = "receding-horizon" if p.cfg.replan_h == 1 else f"receding-horizon/{p.cfg.replan_h}h"
    return _outcome(
        p, name, batch, charge, discharge, missed_jobs=int(st.missed.sum()), late_energy_wh=late_wh, solves=solves
    )


def _finish_overdue(p: ShiftProblem, st: _Pending, batch: np.ndarray) -> None:
    """Work left at the end of the span runs in its last hour (late, already counted as missed), so
    every policy does the same work."""
    left = float(st.remaining_wh.sum())
    if left > 1e-6:
        st.missed[st.remaining_wh > 1e-6] = True
        batch[-1] += left
        st.remaining_wh[:] = 0.0


@dataclass(frozen=True)
class Savings:
    """A policy against the baseline (percent less), and the share of the oracle's saving it gets."""

    co2_cut_pct: float
    cost_cut_pct: float
    objective_cut_pct: float
    oracle_fraction: float  # (baseline - policy) / (baseline - oracle), on the objective


def savings(base: ShiftOutcome, policy: ShiftOutcome, best: ShiftOutcome) -> Savings:
    """Percent cuts of CO2, energy cost and the objective vs `base`; the oracle fraction vs `best`."""

    def cut(x: float, x0: float) -> float:
        return 100.0 * (1.0 - x / x0) if x0 else 0.0

    gap = base.objective - best.objective
    frac = (base.objective - policy.objective) / gap if gap > 1e-12 else 1.0
    return Savings(
        cut(policy.co2_kg, base.co2_kg),
        cut(policy.cost_usd, base.cost_usd),
        cut(policy.objective, base.objective),
        frac,
    )
