"""One candidate design, evaluated: hardware model (memory, latency, throughput, power over the day),
rack layout against cooling, design power against the feed, a year of the facility twin, and cost.
An infeasible candidate comes back with `reason` set and the numbers it reached before failing.

    >>> from joulepath.hw import get_model_preset
    >>> inputs = PlanInputs(get_model_preset("llama-3.1-8b"), Demand.flat(5000.0, 1000, 250))
    >>> ev = evaluate(Candidate("h100-sxm", 1, 64, "bf16", 1.0, False, "hyperscale-liquid"), inputs)
    >>> ev.feasible, ev.n_devices > 0
    (True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from joulepath.facility import TwinMetrics, get_preset
from joulepath.hw.catalog import get_accelerator
from joulepath.hw.perf import ESTIMATE, Deployment, TransformerSpec
from joulepath.plan.inputs import Demand, PlanInputs, Prices
from joulepath.plan.site import RackLayout, design_ratio, facility_config, rack_layout, twin_year
from joulepath.plan.unit import (
    UTILISATION_MAX,
    KvTransfer,
    PrefillPool,
    UnitPerformance,
    colocated,
    decode_only,
    kv_transfer,
    prefill_pool,
)

SECONDS_PER_YEAR = 365.0 * 86400.0


@dataclass(frozen=True)
class Candidate:
    """One point of the search grid."""

    accelerator: str
    tensor_parallel: int
    batch_cap: int
    precision: str  # weight dtype: bf16 | fp8 | int8 | int4 ...
    power_cap_frac: float  # of the accelerator's TDP
    phase_split: bool
    cooling: str  # facility preset

    @property
    def label(self) -> str:
        split = " split" if self.phase_split else ""
        return (
            f"{self.accelerator} tp{self.tensor_parallel} b{self.batch_cap} {self.precision} "
            f"cap{self.power_cap_frac:.0%} {self.cooling}{split}"
        )


@dataclass(frozen=True)
class Evaluation:
    """A candidate's outcome. Energies in J, power in W, carbon in g, money in USD, times in s.
    Numbers are estimates (hardware model + facility twin); `provenance` says which."""

    candidate: Candidate
    reason: str  # "" when feasible
    n_devices: int = 0
    n_prefill_devices: int = 0
    batch: float = 0.0
    tpot_p99_s: float = math.nan
    ttft_p99_s: float = math.nan
    slo_headroom_frac: float = math.nan  # smallest of (SLO / predicted - 1) over TTFT and TPOT
    device_j_per_token: float = math.nan
    wall_j_per_token: float = math.nan
    carbon_g_per_token: float = math.nan
    cost_usd_per_mtok: float = math.nan
    kv_transfer_j_per_token: float = 0.0
    design_facility_mw: float = 0.0
    racks: int = 0
    rack_form: str = ""
    pue: float = math.nan
    wall_per_board: float = math.nan  # facility energy at the meter over board energy (twin year)
    capex_usd: float = 0.0
    provenance: str = ESTIMATE

    @property
    def feasible(self) -> bool:
        return not self.reason


def model_spec(model: TransformerSpec, precision: str) -> TransformerSpec:
    """The model stored in `precision` (weights); KV cache stays as the preset has it."""
    return model.with_dtypes(weight_dtype=precision)


def deployment_of(c: Candidate) -> Deployment:
    acc = get_accelerator(c.accelerator)
    if acc.tdp_w is None:
        raise ValueError(f"{c.accelerator}: TDP not published; the planner cannot size its power")
    return Deployment(acc, c.tensor_parallel, power_limit_w=c.power_cap_frac * acc.tdp_w)


@dataclass(frozen=True)
class Pools:
    """The fleet's pools, sized for the day's peak at `UTILISATION_MAX`."""

    decode: UnitPerformance
    n_decode_units: int
    prefill: PrefillPool | None
    n_prefill_units: int
    kv: KvTransfer | None


def size_pools(c: Candidate, spec: TransformerSpec, dep: Deployment, demand: Demand) -> Pools:
    """Units per pool; raises ValueError when the weights do not fit (memory)."""
    p, o, p99 = demand.prompt_tokens, demand.output_tokens, demand.prompt_tokens_p99
    if not c.phase_split:
        unit = colocated(spec, dep, c.batch_cap, p, o, p99)
        return Pools(unit, _units(demand.peak_tokens_per_s, unit.tokens_per_s), None, 0, None)
    unit = decode_only(spec, dep, c.batch_cap, p, o)
    pre = prefill_pool(spec, dep, p, p99)
    peak_prompt_tps = demand.peak_tokens_per_s / o * p
    in_domain = (dep.accelerator.scale_up_domain or 0) >= 72
    kv = kv_transfer(spec, dep, p, p99, in_domain)
    return Pools(
        unit,
        _units(demand.peak_tokens_per_s, unit.tokens_per_s),
        pre,
        _units(peak_prompt_tps, pre.prompt_tokens_per_s),
        kv,
    )


def _units(peak_tokens_per_s: float, unit_tokens_per_s: float) -> int:
    return max(1, math.ceil(peak_tokens_per_s / (UTILISATION_MAX * unit_tokens_per_s)))


def latencies_s(pools: Pools) -> tuple[float, float]:
    """(p99 TTFT, p99 TPOT). Split: the p99 prompt's prefill, queueing at the pool's peak utilisation
    (M/D/1 mean wait, an estimate), the KV transfer, and the first decode step."""
    d = pools.decode
    if pools.prefill is None or pools.kv is None:
        return d.ttft_p99_s, d.tpot_p99_s
    rho = UTILISATION_MAX
    wait_s = pools.prefill.prefill_p99_s * rho / (2 * (1 - rho))
    return pools.prefill.prefill_p99_s + wait_s + pools.kv.time_p99_s + d.itl_s, d.tpot_p99_s


def board_power_per_bin_w(pools: Pools, demand: Demand, dep: Deployment, host_w: float) -> np.ndarray:
    """Devices + hosts of all pools, one value per demand bin, W (estimated: hardware model)."""
    out_tps = np.array(demand.tokens_per_s)
    decode_w = pools.n_decode_units * pools.decode.curve.power_at(out_tps / pools.n_decode_units)
    prefill_w = np.zeros_like(out_tps)
    if pools.prefill is not None:
        pre = pools.prefill
        util = np.minimum(
            out_tps / demand.output_tokens * demand.prompt_tokens / (pools.n_prefill_units * pre.prompt_tokens_per_s),
            1.0,
        )
        prefill_w = pools.n_prefill_units * (pre.idle_power_w + util * (pre.busy_power_w - pre.idle_power_w))
    n_devices = (pools.n_decode_units + pools.n_prefill_units) * dep.n_devices
    return decode_w + prefill_w + host_w * n_devices


def evaluate(c: Candidate, inputs: PlanInputs) -> Evaluation:
    """The candidate through the hardware model, racks, feed, facility twin and prices."""
    spec, dep = model_spec(inputs.model, c.precision), deployment_of(c)
    if c.tensor_parallel > (dep.accelerator.scale_up_domain or 1):
        return Evaluation(c, f"parallelism: tp {c.tensor_parallel} exceeds the scale-up domain")
    try:
        pools = size_pools(c, spec, dep, inputs.demand)
    except ValueError as exc:
        return Evaluation(c, f"memory: {exc}")
    ttft, tpot = latencies_s(pools)
    slo = inputs.slo
    headroom = min(slo.ttft_p99_s / ttft, slo.tpot_p99_s / tpot) - 1.0
    n_dev = (pools.n_decode_units + pools.n_prefill_units) * dep.n_devices
    base = Evaluation(c, "", n_dev, pools.n_prefill_units * dep.n_devices, pools.decode.batch, tpot, ttft, headroom)
    if tpot > slo.tpot_p99_s:
        return _failed(base, f"SLO: p99 TPOT {tpot * 1e3:.1f} ms > {slo.tpot_p99_s * 1e3:.0f} ms")
    if ttft > slo.ttft_p99_s:
        return _failed(base, f"SLO: p99 TTFT {ttft:.2f} s > {slo.ttft_p99_s:g} s")
    return _facility(base, pools, dep, inputs)


def _failed(ev: Evaluation, reason: str) -> Evaluation:
    return Evaluation(
        ev.candidate,
        reason,
        ev.n_devices,
        ev.n_prefill_devices,
        ev.batch,
        ev.tpot_p99_s,
        ev.ttft_p99_s,
        ev.slo_headroom_frac,
    )


def _facility(base: Evaluation, pools: Pools, dep: Deployment, inputs: PlanInputs) -> Evaluation:
    """Racks, feed, the twin year and the money for a candidate that meets its SLOs."""
    c, site = base.candidate, inputs.site
    cooling_kind = get_preset(c.cooling).cooling.kind
    layout = rack_layout(
        base.n_devices, dep.accelerator.scale_up_domain or 1, dep.power_ceiling_w, site.host_w_per_device,
        cooling_kind, site, inputs.prices,
    )  # fmt: skip
    if isinstance(layout, str):
        return _failed(base, layout)
    design_board_w = base.n_devices * (dep.power_ceiling_w + site.host_w_per_device)
    design_mw = design_board_w * design_ratio(c.cooling, site.climate, site.grid_region) / 1e6
    if design_mw > site.feed_mw:
        return _failed(base, f"feed: design facility power {design_mw:.1f} MW > {site.feed_mw:g} MW feed")
    board_w = board_power_per_bin_w(pools, inputs.demand, dep, site.host_w_per_device)
    cfg = facility_config(c.cooling, site, inputs.prices.tariff, layout.rack_kw)
    twin = twin_year(cfg, board_w, inputs.demand.bin_s, design_board_w, inputs.facility_step_s, inputs.facility_days)
    return _priced(base, pools, layout, (design_board_w, design_mw), board_w, twin.metrics, inputs)


def capex_usd(
    accelerator: str, n_devices: int, layout: RackLayout, design_board_w: float, prices: Prices
) -> tuple[float, float]:
    """(capital cost, its straight-line amortisation per year), USD: devices and servers, racks, and the
    building per MW of design IT power (a liquid premium for liquid racks)."""
    price = prices.accelerator(accelerator)
    devices = n_devices * (price.usd_per_device + price.usd_server_per_device)
    racks = layout.racks * prices.racks[layout.rack_class].usd_per_rack
    premium = prices.liquid_premium_frac if layout.rack_class == "liquid" else 0.0
    building = design_board_w / 1e6 * prices.facility_usd_per_mw_it * (1 + premium)
    per_year = devices / prices.accelerator_years + racks / prices.rack_years + building / prices.facility_years
    return devices + racks + building, per_year


def _priced(
    base: Evaluation, pools: Pools, layout: RackLayout, design: tuple[float, float], board_w: np.ndarray,
    m: TwinMetrics, inputs: PlanInputs,
) -> Evaluation:  # fmt: skip
    """Per-token energy, carbon and cost over the twin's horizon (tokens served = the demand).
    `design` is (design board power W, design facility power MW)."""
    design_board_w, design_mw = design
    c, prices, demand = base.candidate, inputs.prices, inputs.demand
    horizon_s = inputs.facility_days * 86400.0
    tokens = demand.mean_tokens_per_s * horizon_s
    device_w = board_w - inputs.site.host_w_per_device * base.n_devices
    kv_j_tok = pools.kv.energy_per_request_j / demand.output_tokens if pools.kv else 0.0
    capex, capex_per_year = capex_usd(c.accelerator, base.n_devices, layout, design_board_w, prices)
    capex_per_horizon = capex_per_year * horizon_s / SECONDS_PER_YEAR
    carbon_usd = m.carbon_g / 1e6 * prices.carbon_usd_per_t
    cost = capex_per_horizon + m.cost_usd + carbon_usd
    return Evaluation(
        c, "", base.n_devices, base.n_prefill_devices, base.batch, base.tpot_p99_s, base.ttft_p99_s,
        base.slo_headroom_frac,
        device_j_per_token=float(device_w.mean()) * horizon_s / tokens + kv_j_tok,
        wall_j_per_token=m.facility_energy_j / tokens + kv_j_tok,
        carbon_g_per_token=m.carbon_g / tokens,
        cost_usd_per_mtok=cost / tokens * 1e6,
        kv_transfer_j_per_token=kv_j_tok,
        design_facility_mw=design_mw,
        racks=layout.racks,
        rack_form=f"{layout.rack_form}, {layout.rack_class}",
        pue=m.pue,
        wall_per_board=m.facility_energy_j / (float(board_w.mean()) * horizon_s),
        capex_usd=capex,
        provenance=f"{ESTIMATE}; {m.provenance}; prices: plan/data/prices.toml ({prices.table_date})",
    )  # fmt: skip
