"""Power caps on accelerators: a Zeus-style power-limit optimizer and POLCA-style oversubscription.

Everything here is estimated by the hardware model (`hw.perf`: roofline step time, the calibrated power
curve, and its DVFS estimate under a cap: clock ~ ((cap - idle) / (P - idle))^(1/3), only the compute-
bound share of a step slows). Data flow:

    trace -> `cap_curve` (hw.fleet.project_trace at each cap: J/token, p99 ITL) -> `choose_cap`
    utilisation per minute -> `load_table` (power and slowdown per load level x cap) -> `oversubscribe`

A cap below the power the unchanged memory traffic needs (idle + HBM bytes/s x pJ/byte + FLOP/s x
pJ/FLOP at the uncapped rates) is one the model cannot honour physically (the memory-bound share would
have to slow as well); such caps are marked `consistent=False` and never chosen.

Zeus: You et al., "Zeus: Understanding and Optimizing GPU Energy Consumption of DNN Training", NSDI 2023.
POLCA: Patel et al., "POLCA: Power Oversubscription in LLM Cloud Providers", arXiv 2308.12908 (2023).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from joulepath.hw.fleet import FleetProjection, project_trace
from joulepath.hw.perf import (
    COMPUTE_DTYPE,
    ESTIMATE,
    Deployment,
    Efficiency,
    TransformerSpec,
    calibrated_efficiency,
    steady_state,
)


@dataclass(frozen=True)
class Trace:
    """Requests: arrival (s), prompt and output tokens, one entry per request."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray


@dataclass(frozen=True)
class CapPoint:
    """One power limit over a trace (estimated): energy per output token and the p99 inter-token latency
    (token-weighted over the trace's one-minute bins), each against the uncapped default."""

    cap_w: float
    j_per_token: float
    p99_itl_s: float
    mean_device_power_w: float
    floor_w: float  # the memory traffic's power at this load: caps under it are inconsistent
    j_saving_pct: float
    p99_slowdown_pct: float
    consistent: bool
    provenance: str = ESTIMATE


def weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The `q`-th percentile (0-100) of `values` with `weights` (NaN values dropped)."""
    ok = ~np.isnan(values) & (weights > 0)
    v, w = values[ok], weights[ok]
    if not len(v):
        return float("nan")
    order = np.argsort(v)
    cum = np.cumsum(w[order]) / w.sum()
    return float(v[order][min(np.searchsorted(cum, q / 100.0), len(v) - 1)])


def movement_floor_w(
    spec: TransformerSpec,
    dep: Deployment,
    batch: float,
    prompt_tokens: float,
    output_tokens: float,
    eff: Efficiency,
    static_scales: bool = True,
) -> float:
    """Per-device power of the memory traffic and FLOPs of a unit at `batch` at the uncapped rates, plus
    idle: what a cap cannot remove without slowing the memory-bound share (W, estimated).
    `static_scales=False` (the conservative reading) also keeps the calibrated static share of TDP, i.e.
    assumes none of it falls with the core clock; the model itself lets all of it above idle fall."""
    s = steady_state(
        spec, dataclasses.replace(dep, power_limit_w=None), max(batch, 1.0), prompt_tokens, output_tokens, eff
    )
    acc = dep.accelerator
    bytes_s = s.memory_util * acc.memory_bandwidth_b_s
    flops_s = s.compute_util * acc.peak_flops(COMPUTE_DTYPE.get(spec.weight_dtype, "bf16"))
    idle = eff.idle_fraction_of_tdp * dep.tdp_w
    if not static_scales:
        idle = max(idle, eff.power_static_fraction * dep.tdp_w)
    return float(idle + (eff.hbm_pj_per_byte * bytes_s + eff.pj_per_flop * flops_s) * 1e-12)


def _project(trace: Trace, spec: TransformerSpec, dep: Deployment, n_devices: int, eff: Efficiency) -> FleetProjection:
    return project_trace(trace.arrival_s, trace.prompt_tokens, trace.output_tokens, spec, dep, n_devices, eff=eff)


def _p99_itl_s(proj: FleetProjection) -> float:
    return weighted_percentile(proj.itl_s, proj.served_tokens, 99.0)


def cap_curve(
    trace: Trace,
    spec: TransformerSpec,
    dep: Deployment,
    n_devices: int,
    cap_fracs: np.ndarray,
    eff: Efficiency | None = None,
    static_scales: bool = True,
) -> list[CapPoint]:
    """J/token and p99 ITL of the fleet serving `trace` at each power limit `cap_fracs` x TDP (1.0 =
    uncapped default, which must be among them). Estimated (`hw.fleet.project_trace`); `static_scales`
    as in `movement_floor_w` (which caps count as consistent)."""
    eff = eff or calibrated_efficiency()
    base_dep = dataclasses.replace(dep, power_limit_w=None)
    base = _project(trace, spec, base_dep, n_devices, eff)
    busiest = float(np.nanmax(base.batch_per_unit))
    mean_p, mean_o = float(trace.prompt_tokens.mean()), float(trace.output_tokens.mean())
    floor_w = movement_floor_w(spec, base_dep, busiest, mean_p, mean_o, eff, static_scales)
    j0, p0 = base.device_energy_j / base.total_served_tokens, _p99_itl_s(base)
    points = []
    for frac in sorted(cap_fracs, reverse=True):
        cap_w = float(frac) * dep.tdp_w
        proj = _project(trace, spec, dataclasses.replace(dep, power_limit_w=cap_w), n_devices, eff)
        served_all = proj.total_served_tokens >= 0.999 * base.total_served_tokens
        j = proj.device_energy_j / proj.total_served_tokens
        p99 = _p99_itl_s(proj) if served_all else float("inf")
        mean_w = float(np.mean(proj.device_power_w)) / n_devices
        saving, slow = 100.0 * (1.0 - j / j0), 100.0 * (p99 / p0 - 1.0)
        points.append(CapPoint(cap_w, j, p99, mean_w, floor_w, saving, slow, cap_w >= floor_w))
    return points


def choose_cap(points: list[CapPoint], max_slowdown_pct: float = 5.0) -> CapPoint:
    """Zeus-style choice: the consistent cap with the least J/token whose p99 ITL is at most
    `max_slowdown_pct` worse than uncapped (the uncapped point always qualifies)."""
    ok = [p for p in points if p.consistent and p.p99_slowdown_pct <= max_slowdown_pct]
    if not ok:
        raise ValueError("no cap meets the latency bound (is the uncapped point, frac 1.0, in the curve?)")
    return min(ok, key=lambda p: p.j_per_token)


@dataclass(frozen=True)
class LoadTable:
    """Per-device power and ITL slowdown of one serving unit at each load level x power limit (estimated).
    Load: the share of the uncapped unit's capacity (output tokens/s at its maximum batch)."""

    util: np.ndarray  # (U,) ascending
    cap_w: np.ndarray  # (C,) descending; cap_w[0] is the TDP (uncapped)
    power_w: np.ndarray  # (U, C) per device
    slowdown_pct: np.ndarray  # (U, C) ITL vs uncapped at that load; inf where the cap cannot keep up
    floor_w: np.ndarray  # (U,) `movement_floor_w` at that load: caps under it count as throttled
    provenance: str = ESTIMATE


def _steady_bin(
    spec: TransformerSpec, dep: Deployment, tokens_per_s: float, prompt: float, output: float, eff: Efficiency
) -> FleetProjection:
    """One minute of constant load on one unit (evenly spaced requests of the mean lengths)."""
    n = max(int(tokens_per_s * 60.0 / output), 1)
    trace = Trace(np.linspace(0.0, 59.999, n), np.full(n, prompt), np.full(n, tokens_per_s * 60.0 / n))
    return _project(trace, spec, dep, dep.n_devices, eff)


def load_table(
    spec: TransformerSpec,
    dep: Deployment,
    prompt_tokens: float,
    output_tokens: float,
    utils: np.ndarray,
    cap_fracs: np.ndarray,
    eff: Efficiency | None = None,
) -> LoadTable:
    """Power and slowdown per (load, cap) for `load_table` users such as `oversubscribe`."""
    eff = eff or calibrated_efficiency()
    free = dataclasses.replace(dep, power_limit_w=None)
    capacity = _steady_bin(spec, free, 1e9, prompt_tokens, output_tokens, eff).capacity_tokens_per_s
    caps = np.sort(np.asarray(cap_fracs, dtype=float))[::-1] * dep.tdp_w
    utils = np.sort(np.asarray(utils, dtype=float))
    power, slow, floor = np.zeros((len(utils), len(caps))), np.zeros((len(utils), len(caps))), np.zeros(len(utils))
    for i, u in enumerate(utils):
        base = _steady_bin(spec, free, max(u, 1e-3) * capacity, prompt_tokens, output_tokens, eff)
        floor[i] = movement_floor_w(spec, free, float(base.batch_per_unit[0]), prompt_tokens, output_tokens, eff)
        for k, cap in enumerate(caps):
            capped = dataclasses.replace(dep, power_limit_w=float(cap))
            proj = _steady_bin(spec, capped, max(u, 1e-3) * capacity, prompt_tokens, output_tokens, eff)
            power[i, k] = float(proj.device_power_w[0]) / dep.n_devices
            # keeps up: no more left waiting than the uncapped unit leaves (at full load it leaves a little)
            keeps_up = proj.backlog_tokens[-1] <= base.backlog_tokens[-1] + 1e-6 * max(proj.demand_tokens.sum(), 1.0)
            slow[i, k] = 100.0 * (proj.itl_s[0] / base.itl_s[0] - 1.0) if keeps_up else np.inf
    return LoadTable(utils, caps, power, np.nan_to_num(slow, nan=0.0, posinf=np.inf), floor)


@dataclass(frozen=True)
class Oversubscription:
    """How many devices a fixed feed hosts when caps apply only where the fleet's power would exceed it."""

    feed_w: float
    baseline_devices: int  # provisioned at nameplate: feed / TDP
    devices: int
    gain_pct: float
    capped_minutes_frac: float  # minutes with any cap applied
    throttled_minutes_frac: float  # minutes whose cap slows ITL beyond the bound (or cannot be honoured)
    max_slowdown_pct: float
    provenance: str = ESTIMATE


def throttle_fracs(
    table: LoadTable, util: np.ndarray, n_devices: int, feed_w: float, bound_pct: float
) -> tuple[float, float]:
    """(share of minutes capped, share throttled beyond `bound_pct`) for `n_devices` all at load `util`
    per minute, capped uniformly to feed / n when their uncapped power would exceed the feed. The cap
    is rounded down to the table's next cap (conservative)."""
    per_device_w = np.interp(util, table.util, table.power_w[:, 0])
    capped = n_devices * per_device_w > feed_w
    cap_w = feed_w / n_devices
    below = np.flatnonzero(table.cap_w <= cap_w)
    if not len(below):
        return float(capped.mean()), float(capped.mean())
    k = int(below[0])
    slow = np.interp(util, table.util, np.minimum(table.slowdown_pct[:, k], 1e9))
    inconsistent = cap_w < np.interp(util, table.util, table.floor_w)
    throttled = capped & ((slow > bound_pct) | inconsistent)
    return float(capped.mean()), float(throttled.mean())


def oversubscribe(
    table: LoadTable,
    util: np.ndarray,
    feed_w: float,
    bound_pct: float = 5.0,
    max_throttled_frac: float = 0.001,
    max_capped_frac: float = 1.0,
) -> Oversubscription:
    """The most devices `feed_w` hosts with under `max_throttled_frac` of minutes throttled beyond
    `bound_pct` and at most `max_capped_frac` of minutes capped at all (POLCA: caps only at rare peaks),
    against nameplate provisioning (feed / TDP devices, never capped)."""
    n0 = int(feed_w // float(table.cap_w[0]))

    def ok(n: int) -> bool:
        capped, throttled = throttle_fracs(table, util, n, feed_w, bound_pct)
        return throttled < max_throttled_frac and capped <= max_capped_frac

    lo, hi = n0, 10 * n0  # ok(lo); more devices only ever mean lower caps, so bisect
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    n = lo
    capped, throttled = throttle_fracs(table, util, n, feed_w, bound_pct)
    return Oversubscription(feed_w, n0, n, 100.0 * (n / n0 - 1.0), capped, throttled, bound_pct)
