"""Project a request trace onto a fleet of serving units with the hardware model.

A fluid model in time bins: each bin's arriving output tokens (plus any backlog) are spread over the
fleet's units; each unit settles at the batch size whose steady-state throughput (`perf.steady_state`)
meets its share, capped by KV-cache memory and the scheduler's maximum batch; above that the unit
saturates and the rest waits for the next bin. A unit with less work than one sequence keeps is busy
part of the bin and idles the rest. Everything here is an estimate (`provenance`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from joulepath.hw.catalog import GIB
from joulepath.hw.perf import (
    DTYPE_BYTES,
    ESTIMATE,
    Deployment,
    Efficiency,
    SteadyState,
    TransformerSpec,
    calibrated_efficiency,
    kv_capacity_tokens,
    steady_state,
)
from joulepath.hw.work import WorkProfile


@dataclass(frozen=True)
class TierPool:
    """The small model tier's own pool in a fleet with tiered routing (estimated, like the projection)."""

    model: str
    accelerator: str
    kind: str  # the accelerator's class: gpu, npu, tpu ...
    units: int
    devices: int
    power_ceiling_w: float  # per device: what the facility is sized for
    output_tokens: float
    device_energy_j: float


@dataclass(frozen=True)
class FleetProjection:
    """Per-bin series (arrays of length n_bins) and totals for the whole fleet. Units in names."""

    bin_s: float
    t_s: np.ndarray  # bin start
    demand_tokens: np.ndarray  # output tokens arriving in the bin
    served_tokens: np.ndarray
    backlog_tokens: np.ndarray  # waiting at the end of the bin
    batch_per_unit: np.ndarray  # sequences in flight per unit (time-averaged)
    itl_s: np.ndarray  # inter-token latency at that batch (nan when idle)
    device_power_w: np.ndarray  # all accelerators of the fleet
    n_units: int
    devices_per_unit: int
    max_batch_per_unit: int
    capacity_tokens_per_s: float  # fleet, at the maximum batch and the trace's mean lengths
    idle_power_w: float  # fleet, nothing running
    provenance: str = ESTIMATE
    small_tier: TierPool | None = None  # tiered routing: the small tier's pool (None: one model serves all)

    @property
    def n_devices(self) -> int:
        """Accelerators in the fleet, both pools (a small-tier pool's units have devices of their own size)."""
        if self.small_tier is None:
            return self.n_units * self.devices_per_unit
        return (self.n_units - self.small_tier.units) * self.devices_per_unit + self.small_tier.devices

    @property
    def device_energy_j(self) -> float:
        return float(np.sum(self.device_power_w) * self.bin_s)

    @property
    def total_served_tokens(self) -> float:
        return float(self.served_tokens.sum())

    @property
    def utilisation(self) -> float:
        """Served output tokens over what the fleet could have produced in the same time."""
        horizon_s = self.bin_s * len(self.t_s)
        return self.total_served_tokens / (self.capacity_tokens_per_s * horizon_s) if horizon_s else 0.0


def max_batch(spec: TransformerSpec, dep: Deployment, context_tokens: float, scheduler_max: int) -> int:
    """Largest batch whose KV cache fits next to the weights (and under the scheduler's limit); a sequence
    holds its attended context (sliding-window layers only their window), as the decode step reads it."""
    capacity = kv_capacity_tokens(spec, dep)
    if capacity is None:
        raise ValueError(f"{dep.accelerator.name}: memory capacity not published; cannot size the KV cache")
    if capacity <= 0:
        weights_gib = spec.params_total * DTYPE_BYTES[spec.weight_dtype] / GIB
        raise ValueError(
            f"{spec.name} weights ({weights_gib:.0f} GiB) do not fit on {dep.n_devices} x {dep.accelerator.name} "
            f"({dep.accelerator.memory_capacity_gib:g} GiB each); raise fleet.tensor_parallel or choose a larger "
            "accelerator"
        )
    per_sequence = max(spec.attended_tokens(context_tokens), 1.0)  # sliding-window layers keep only their window
    fit = int(capacity * dep.data_parallel // per_sequence)
    if fit < 1:  # vLLM would refuse to start: not even one sequence's cache fits next to the weights
        need_gib = per_sequence * spec.kv_bytes_per_token / GIB
        raise ValueError(
            f"one sequence of {context_tokens:,.0f} tokens needs {need_gib:.1f} GiB of KV cache, more than {spec.name} "
            f"leaves free on {dep.n_devices} x {dep.accelerator.name}; raise fleet.tensor_parallel, choose a larger "
            "accelerator or shorten the requests"
        )
    return min(fit, scheduler_max)


def unit_capacity_tokens_per_s(
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    spec: TransformerSpec,
    dep: Deployment,
    scheduler_max_batch: int = 256,
    eff: Efficiency | None = None,
    work: WorkProfile | None = None,
) -> float:
    """Output tokens/s of one serving unit at its maximum batch and these requests' mean lengths (what
    `project_trace` reports per unit as `capacity_tokens_per_s`)."""
    return _full_batch(prompt_tokens, output_tokens, spec, dep, scheduler_max_batch, eff, work)[1].output_tokens_per_s


def _full_batch(
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    spec: TransformerSpec,
    dep: Deployment,
    scheduler_max_batch: int,
    eff: Efficiency | None,
    work: WorkProfile | None,
) -> tuple[int, SteadyState]:
    """The maximum batch one unit holds for these requests' mean lengths, and its steady state there."""
    eff, work = eff or calibrated_efficiency(), work or WorkProfile()
    mean_p, mean_o = float(prompt_tokens.mean()), float(output_tokens.mean())
    b_max = max_batch(work.resident_spec(spec), dep, mean_p + mean_o / 2, scheduler_max_batch)
    return b_max, steady_state(spec, dep, b_max, mean_p, mean_o, eff, work)


def project_trace(
    arrival_s: np.ndarray,
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    spec: TransformerSpec,
    dep: Deployment,
    n_devices: int,
    scheduler_max_batch: int = 256,
    bin_s: float = 60.0,
    eff: Efficiency | None = None,
    work: WorkProfile | None = None,
    horizon_s: float | None = None,
) -> FleetProjection:
    """Fleet power, throughput and backlog over the trace's horizon, bin by bin.

    `work` is the work profile measured where this configuration was served (default: no optimization):
    it is the one place a measured optimization enters the projection, and through its device power
    the facility load and the wall energy; `hw.work` documents what each field changes. `horizon_s`
    (default: the last arrival) fixes the bins, so projections of parts of one trace line up."""
    eff = eff or calibrated_efficiency()
    work = work or WorkProfile()
    n_units = n_devices // dep.n_devices
    if n_units < 1:
        raise ValueError(f"fleet of {n_devices} devices is smaller than one serving unit ({dep.n_devices} devices)")
    if horizon_s is None:
        horizon_s = float(arrival_s.max()) + 1e-9 if len(arrival_s) else bin_s
    n_bins = max(1, int(np.ceil(horizon_s / bin_s)))
    idx = np.minimum((arrival_s // bin_s).astype(int), n_bins - 1)
    demand = np.bincount(idx, weights=output_tokens, minlength=n_bins).astype(float)
    prompt_sum = np.bincount(idx, weights=prompt_tokens, minlength=n_bins)
    count = np.bincount(idx, minlength=n_bins)
    mean_p, mean_o = float(prompt_tokens.mean()), float(output_tokens.mean())
    b_max, full = _full_batch(prompt_tokens, output_tokens, spec, dep, scheduler_max_batch, eff, work)
    idle_w = eff.idle_fraction_of_tdp * dep.tdp_w * dep.n_devices
    served, backlog, batch, itl, power = (np.zeros(n_bins) for _ in range(5))
    waiting = 0.0
    for i in range(n_bins):
        p = prompt_sum[i] / count[i] if count[i] else mean_p
        o = demand[i] / count[i] if count[i] else mean_o
        want_per_unit_s = (demand[i] + waiting) / n_units / bin_s
        unit = _settle(spec, dep, want_per_unit_s, p, o, b_max, idle_w, eff, work)
        served[i] = unit.tokens_per_s * n_units * bin_s
        waiting = max(demand[i] + waiting - served[i], 0.0)
        backlog[i], batch[i], itl[i], power[i] = waiting, unit.batch, unit.itl_s, unit.power_w * n_units
    return FleetProjection(
        bin_s=bin_s,
        t_s=np.arange(n_bins) * bin_s,
        demand_tokens=demand,
        served_tokens=served,
        backlog_tokens=backlog,
        batch_per_unit=batch,
        itl_s=itl,
        device_power_w=power,
        n_units=n_units,
        devices_per_unit=dep.n_devices,
        max_batch_per_unit=b_max,
        capacity_tokens_per_s=full.output_tokens_per_s * n_units,
        idle_power_w=idle_w * n_units,
    )


def pooled(large: FleetProjection | None, small: FleetProjection, model: str, dep: Deployment) -> FleetProjection:
    """Two model tiers, each on its own pool of serving units over the same bins, as one fleet: tokens,
    backlog, units, idle power, capacity and device power add (each pool draws its own idle power); the
    sequences in flight per unit are the units' mean; ITL is the served-token-weighted mean of the tiers'.
    `model` and `dep`: what the small pool runs and on which accelerator (its units may have another size
    than the large pool's: `n_devices` counts both; `devices_per_unit` is the large pool's). `large` None:
    every request on the small tier."""
    pool = TierPool(model, dep.accelerator.name, dep.accelerator.kind, small.n_units, small.n_units * dep.n_devices,
                    dep.power_ceiling_w, small.total_served_tokens, small.device_energy_j)  # fmt: skip
    where = f"{model} on {small.n_units} {dep.accelerator.name} units"
    if dep.accelerator.kind != "gpu":  # the efficiency factors were fitted on H100 rows
        where += f" (a {dep.accelerator.kind}: estimated with GPU-fitted efficiency factors, an extrapolation)"
    if large is None:
        return dataclasses.replace(small, small_tier=pool, provenance=f"{small.provenance}; every request on {where}")
    if len(large.t_s) != len(small.t_s) or large.bin_s != small.bin_s:
        raise ValueError("pooled needs both tiers projected over the same bins (pass the same horizon_s)")
    served = large.served_tokens + small.served_tokens
    with np.errstate(invalid="ignore", divide="ignore"):
        weighted = np.nan_to_num(large.itl_s) * large.served_tokens + np.nan_to_num(small.itl_s) * small.served_tokens
        itl = np.where(served > 0, weighted / served, np.nan)
    units = large.n_units + small.n_units
    share = small.demand_tokens.sum() / max(large.demand_tokens.sum() + small.demand_tokens.sum(), 1e-9)
    return dataclasses.replace(
        large,
        demand_tokens=large.demand_tokens + small.demand_tokens,
        served_tokens=served,
        backlog_tokens=large.backlog_tokens + small.backlog_tokens,
        batch_per_unit=(large.batch_per_unit * large.n_units + small.batch_per_unit * small.n_units) / units,
        itl_s=itl,
        device_power_w=large.device_power_w + small.device_power_w,
        n_units=units,
        capacity_tokens_per_s=large.capacity_tokens_per_s + small.capacity_tokens_per_s,
        idle_power_w=large.idle_power_w + small.idle_power_w,
        provenance=f"{large.provenance}; {share:.0%} of output tokens on a small-tier pool: {where}",
        small_tier=pool,
    )


def pool_split(n_units: int, large_unit_s: float, small_unit_s: float) -> tuple[int, int]:
    """(large, small) serving units out of `n_units`, in proportion to the unit-seconds each tier needs at
    full batch, at least one each.

    >>> pool_split(4, 3.0, 1.0), pool_split(4, 10.0, 0.1), pool_split(10, 1.0, 1.0)
    ((3, 1), (3, 1), (5, 5))
    """
    if n_units < 2:
        raise ValueError("tiered pools need at least 2 serving units (one per tier)")
    small = round(n_units * small_unit_s / max(large_unit_s + small_unit_s, 1e-12))
    small = min(max(small, 1), n_units - 1)
    return n_units - small, small


@dataclass(frozen=True)
class _UnitState:
    batch: float
    tokens_per_s: float
    itl_s: float
    power_w: float


def _settle(
    spec: TransformerSpec,
    dep: Deployment,
    want_tokens_per_s: float,
    prompt: float,
    output: float,
    b_max: int,
    idle_w: float,
    eff: Efficiency,
    work: WorkProfile,
) -> _UnitState:
    """The batch at which one unit's throughput meets `want_tokens_per_s` (bisection on log batch)."""
    if want_tokens_per_s <= 0:
        return _UnitState(0.0, 0.0, float("nan"), idle_w)
    top = steady_state(spec, dep, b_max, prompt, output, eff, work)
    if want_tokens_per_s >= top.output_tokens_per_s:
        return _UnitState(b_max, top.output_tokens_per_s, top.itl_s, top.power_w)
    one = steady_state(spec, dep, 1, prompt, output, eff, work)
    if want_tokens_per_s <= one.output_tokens_per_s:  # busy part of the bin at batch 1, idle otherwise
        duty = want_tokens_per_s / one.output_tokens_per_s
        return _UnitState(duty, want_tokens_per_s, one.itl_s, duty * one.power_w + (1 - duty) * idle_w)
    lo, hi = 0.0, float(np.log(b_max))
    for _ in range(30):
        mid = (lo + hi) / 2
        rate = steady_state(spec, dep, float(np.exp(mid)), prompt, output, eff, work).output_tokens_per_s
        if rate < want_tokens_per_s:
            lo = mid
        else:
            hi = mid
    s = steady_state(spec, dep, float(np.exp(hi)), prompt, output, eff, work)
    return _UnitState(s.batch, want_tokens_per_s, s.itl_s, s.power_w)
