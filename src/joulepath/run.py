"""The main job, `joulepath run`: scenario -> trace -> real execution of its first requests on this
machine (engine baseline vs optimized, golden accuracy, hot-path profile; `execute.py`) -> projection
of the whole trace onto the fleet (hardware model), baseline and optimized, each with the work profile
measured when it was served here (`link.work_profiles`) -> facility twin (the fleet's board power series,
repeated or stretched over the facility horizon) -> ledger (device -> host -> IT overheads -> power
chain -> cooling -> auxiliaries) -> result.json, telemetry and report.html (`report`).
"""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from joulepath.facility import Clock, TwinResult, load_on_clock, run_twin
from joulepath.facility.feedback import interval_means
from joulepath.hw import Deployment, get_accelerator
from joulepath.hw.fleet import FleetProjection, pool_split, pooled, project_trace, unit_capacity_tokens_per_s
from joulepath.hw.perf import TransformerSpec, calibrated_efficiency, decode_step
from joulepath.hw.work import WorkProfile
from joulepath.link import work_profile, work_profiles
from joulepath.meter import FacilityRatios, Meter, NodeAssumption, Waterfall, auto_meter, rollup
from joulepath.results import (
    AblationStep,
    ControlOutcome,
    DataMovement,
    EndpointRun,
    FleetOutcome,
    LocalComparison,
    LocalStep,
    PowerCapChoice,
    RatioSpread,
    RunResult,
    ShiftChoice,
    Summary,
)
from joulepath.scenario import SAFE_NAME, ControlSection, Scenario, WorkloadSection
from joulepath.workload import SyntheticParams, Trace, generate, read_azure_csv, trace_stats

if TYPE_CHECKING:
    from joulepath.control import ControlConfig

Progress = Callable[[str], None]


def build_trace(workload: WorkloadSection) -> Trace:
    """The scenario's requests: read or generated, time-scaled, cut to the horizon, classes assigned."""
    stretch = workload.duration_s * workload.time_scale  # unscaled seconds needed to fill the horizon
    if workload.kind == "azure_csv":
        assert workload.path is not None
        trace = read_azure_csv(workload.path)
    else:
        defaults = SyntheticParams()
        params = dataclasses.replace(
            defaults,
            arrival_rate_per_s=workload.arrival_rate_per_s or defaults.arrival_rate_per_s,
            interarrival_cv=workload.interarrival_cv or defaults.interarrival_cv,
        )
        trace = generate(params, stretch, seed=workload.seed)
    trace = trace.scaled(workload.time_scale).window(workload.duration_s)
    return trace.with_priorities(workload.interactive_fraction, seed=workload.seed)


def deployment(scenario: Scenario) -> Deployment:
    f = scenario.fleet
    return Deployment(
        get_accelerator(f.accelerator),
        tensor_parallel=f.tensor_parallel,
        data_parallel=f.data_parallel,
        expert_parallel=f.expert_parallel,
        power_limit_w=f.power_limit_w,
        assumed_tdp_w=f.assumed_tdp_w,
    )


def run(scenario: Scenario, progress: Progress = lambda _: None) -> RunResult:
    """The main job for `scenario` (no files written; see `report.write_result` and `write_run`)."""
    meter = auto_meter()
    meter.begin("analysis")
    progress("trace")
    trace = build_trace(scenario.workload)
    if len(trace) == 0:
        raise ValueError("the workload produced no requests in the horizon; raise workload.duration_s or the rate")
    local = None
    if scenario.serve.enabled:
        from joulepath.execute import serve_locally  # torch and the engine load only when serving here

        local = serve_locally(trace, scenario.serve, scenario.workload.seed, progress, scenario.guard)
    baseline_work, optimized_work = work_profiles(local)
    result = projected(scenario, trace, baseline_work, optimized_work, meter, progress)
    shift = shifted_facility(with_cap(scenario, result.power_cap), result.facility, result.projection, progress)
    result = dataclasses.replace(result, local=local, shift=shift)
    progress("headline waterfall: each lever's step projected onto the fleet and facility")
    return dataclasses.replace(result, ablation=ablation(scenario, trace, result, local))


def run_endpoint(
    scenario: Scenario, trace: Trace, endpoint: EndpointRun, progress: Progress = lambda _: None
) -> RunResult:
    """`joulepath bench serve`: the same projection, facility twin, ledger and report as the main job, with
    the measured endpoint as the optimized configuration (its work profile from its request records) and
    the brute-force baseline (one request at a time, modelled) beside it."""
    meter = auto_meter()
    meter.begin("analysis")
    result = projected(scenario, trace, WorkProfile(batch_limit=1), work_profile(endpoint.run), meter, progress)
    return dataclasses.replace(result, endpoint=endpoint)


def projected(
    scenario: Scenario, trace: Trace, baseline_work: WorkProfile, optimized_work: WorkProfile, meter: Meter,
    progress: Progress,
) -> RunResult:  # fmt: skip
    """Both configurations' work profiles through the fleet projection, facility twin and ledger; `meter`'s
    "analysis" window (opened by the caller) closes here."""
    progress("projection onto the fleet and facility twin: baseline (no batching)")
    baseline = fleet_outcome(scenario, trace, fleet_max_batch(scenario, baseline_work), baseline_work)
    cap = choose_power_cap(scenario, trace)
    capped = with_cap(scenario, cap)
    controlled = f", {scenario.control.controller} cooling control" if scenario.control.enabled else ""
    controlled += f", {cap.cap_w:.0f} W power cap" if cap is not None and cap.applied else ""
    progress(f"projection onto the fleet and facility twin: optimized (continuous batching{controlled})")
    optimized = fleet_outcome(
        capped, trace, fleet_max_batch(scenario, optimized_work), optimized_work, scenario.control.enabled
    )
    movement = _data_movement(scenario.model.spec(), deployment(scenario), optimized.projection, trace)
    return RunResult(
        scenario,
        trace_stats(trace),
        trace.source,
        optimized.projection,
        optimized.waterfall,
        optimized.summary,
        optimized.facility,
        movement,
        calibrated_efficiency().source,
        meter.notes,
        meter.end("analysis"),
        baseline,
        None,
        optimized.work,
        control=optimized.control,
        power_cap=cap,
    )


def ablation(
    scenario: Scenario, trace: Trace, result: RunResult, local: LocalComparison | None
) -> tuple[AblationStep, ...]:
    """The headline waterfall: brute force, then one lever more per step, each projected through the same
    fleet, twin and ledger. The served-here levers (the ladder `execute` measured, rung by rung) come
    first, each with its measured work profile and the paired local ratio to the rung before; then the
    fleet and facility levers: the power cap, cooling control (that step is the optimized run), and
    shifting with a battery (carbon and cost; energy only through the battery's losses)."""
    assert result.baseline is not None
    rungs = local.ladder if local is not None and local.ladder else ()
    brute = rungs[0].description if rungs else "one request at a time (modelled)"
    steps = [_step(result.baseline.summary, "brute force", f"{brute}, no caches, no speculation", rungs[:1])]
    for i, rung in enumerate(rungs[1:], start=1):
        work = work_profile(rung.runs)
        outcome = fleet_outcome(scenario, trace, fleet_max_batch(scenario, work), work)
        steps.append(_step(outcome.summary, rung.lever, rung.description, (rung,), rung.ratio_to(rungs[i - 1])))
    if not rungs:  # nothing served: batching as the hardware model sees it
        work = result.work or WorkProfile()
        outcome = fleet_outcome(scenario, trace, fleet_max_batch(scenario, work), work)
        steps.append(
            _step(outcome.summary, "continuous batching", "continuous batching (modelled, nothing served)", ())
        )
    cap = result.power_cap
    if cap is not None and cap.applied:
        summary = result.summary
        if scenario.control.enabled:  # cooling control's step follows: the capped fleet at fixed setpoints
            work = result.work or WorkProfile()
            summary = fleet_outcome(with_cap(scenario, cap), trace, fleet_max_batch(scenario, work), work).summary
        steps.append(_step(summary, "power cap", f"{cap.cap_w:.0f} W of {cap.tdp_w:.0f} W TDP", ()))
    if scenario.control.enabled:
        c = scenario.control
        steps.append(
            _step(result.summary, f"cooling control ({c.controller})", f"{c.controller} setpoints vs fixed", ())
        )
    if result.shift is not None:
        sh, last = result.shift, steps[-1]
        steps.append(
            AblationStep(
                "shifting + battery",
                f"{100 * sh.deferrable_share:.0f} % of the work deferrable by {sh.deadline_h} h, "
                f"a {sh.battery_hours:g} h battery",
                "fleet and facility",
                last.wall_j_per_token * sh.grid_energy_j[1] / sh.grid_energy_j[0],
                last.carbon_g_per_token * sh.co2_kg[1] / sh.co2_kg[0],
                provenance=sh.provenance,
            )
        )
    return tuple(steps)


def _step(
    s: Summary, lever: str, description: str, rung: tuple[LocalStep, ...], ratio: RatioSpread | None = None
) -> AblationStep:
    where = "served here" if rung else "fleet and facility"
    return AblationStep(
        lever, description, where, s.wall_j_per_token, s.carbon_g / max(s.served_output_tokens, 1.0),
        rung[0] if rung else None, ratio,
        "estimated: this step's work profile through the hardware model, facility twin and ledger"
        + ("; its local figures as served here (energy as the meter labels it)" if rung else ""),
    )  # fmt: skip


def shifted_facility(
    scenario: Scenario, twin: TwinResult, proj: FleetProjection, progress: Progress = lambda _: None
) -> ShiftChoice | None:
    """The optimized facility's wall power with its deferrable share moved in time against the twin's own
    carbon and price series, and a battery dispatched (joulepath.control.shift; None when off). Deferred
    work may raise an hour's draw up to the fleet's design power (every accelerator at its limit, scaled
    to the facility by the peak hour's overheads): the room idle accelerators leave. `scenario` carries the
    optimized fleet's power limit. The load shifted is the facility's before on-site supply and storage."""
    c = scenario.control
    if not c.enabled or c.shifting == "off":
        return None
    from joulepath.control.shift_year import hourly_compatible, shift_facility_year

    if not hourly_compatible(twin.clock.dt_s):
        progress(
            f"shifting skipped: facility.step_s = {twin.clock.dt_s:g} s neither divides an hour nor is whole hours"
        )
        return None
    progress("carbon- and cost-aware shifting of the deferrable work, battery dispatched (with the oracle)")

    s = twin.series
    share = c.shift_deferrable_share(scenario.workload)
    board_w, _, design_w = facility_inputs(scenario, proj)
    room = max(1.0, design_w / float(board_w.max())) if board_w.max() > 0 else 1.0
    r = shift_facility_year(
        s["facility_power_w"], s["carbon_intensity_g_per_kwh"], s["price_usd_per_kwh"], deferrable_share=share,
        deadline_h=c.deadline_h, battery_hours=c.battery_hours, replan_h=c.replan_h, step_s=twin.clock.dt_s,
        capacity_frac_of_peak=room,
    )  # fmt: skip
    best = r.oracle

    def daily(x: np.ndarray) -> tuple[float, ...]:
        return tuple(float(v) for v in interval_means(x, 24))

    return ShiftChoice(
        share, c.deadline_h, c.battery_hours,
        (r.baseline.co2_kg, r.policy.co2_kg, best.co2_kg if best else None),
        (r.baseline.cost_usd, r.policy.cost_usd, best.cost_usd if best else None),
        (float(r.baseline.grid_w.sum()) * 3600, float(r.policy.grid_w.sum()) * 3600),
        r.missed_deadlines, r.saving.oracle_fraction,
        (daily(r.baseline.grid_w), daily(r.policy.grid_w)), daily(r.soc_wh),
        "; ".join(r.provenance[k] for k in ("policy", "oracle") if k in r.provenance)
        + "; the facility's load before on-site supply and storage, the battery at StorageConfig defaults",
    )  # fmt: skip


def fleet_max_batch(scenario: Scenario, work: WorkProfile) -> int:
    """The fleet scheduler's batch limit for a configuration: 1 where it was served one at a time here,
    else the scenario's `fleet.max_batch` (the local limit is sized for this machine, not the fleet)."""
    return 1 if work.batch_limit == 1 else scenario.fleet.max_batch


def fleet_outcome(
    scenario: Scenario, trace: Trace, max_batch: int, work: WorkProfile | None = None, controlled: bool = False
) -> FleetOutcome:
    """Trace -> fleet (hardware model) -> facility twin -> ledger, at a given batch limit per unit, with
    the configuration's measured work profile (`hw.work`; default: no optimization). The profile changes
    the device power series, which is the facility's load, so device, facility and wall energy all follow it.
    `controlled`: the scenario's `[control]` controller sets the cooling (compared with fixed setpoints)."""
    scenario = scenario.model_copy(update={"fleet": scenario.fleet.model_copy(update={"max_batch": max_batch})})
    proj = project(scenario, trace, work)
    horizon_s = proj.bin_s * len(proj.t_s)
    fac = scenario.facility
    twin, control = controlled_facility(scenario, proj) if controlled else (run_facility(scenario, proj), None)
    device_provenance = proj.provenance
    if scenario.fleet.assumed_tdp_w:
        device_provenance += f"; TDP assumed {scenario.fleet.assumed_tdp_w:g} W (fleet.assumed_tdp_w)"
    waterfall = rollup(
        proj.device_energy_j,
        device_provenance,
        horizon_s,
        scenario.fleet.count,
        NodeAssumption(fac.host_w_per_device, fac.host_source),
        facility_ratios(twin),
    )
    summary = _summarise(proj, waterfall, twin, scenario, horizon_s)
    return FleetOutcome(max_batch, proj, waterfall, summary, twin, work or WorkProfile(), control)


def project(scenario: Scenario, trace: Trace, work: WorkProfile | None = None) -> FleetProjection:
    """The trace on the scenario's fleet, in about 60 time bins, with a measured work profile.

    With tiered routing measured (`work.small_tier_share`), that share of the requests (a fixed random
    subset) runs on the fleet's small tier (`model.small_preset`) on a pool of its own: some of the fleet's
    serving units, in proportion to the unit-seconds each tier needs at full batch (`hw.fleet.pool_split`),
    hand their device slots to the small tier — the fleet's accelerators in units like the fleet's, or one
    `fleet.small_tier_accelerator` (an NPU, say) per slot, each its own unit. The fleet keeps `fleet.count`
    devices either way."""
    bin_s = max(1.0, scenario.workload.duration_s / 60)
    dep = deployment(scenario)
    share = work.small_tier_share if work is not None else 0.0
    n_units = scenario.fleet.count // dep.n_devices
    if work is None or not share or n_units < 2 or not len(trace.arrival_s):
        whole = project_trace(trace.arrival_s, trace.prompt_tokens, trace.output_tokens, scenario.model.spec(), dep,
                              scenario.fleet.count, scenario.fleet.max_batch, bin_s, work=work)  # fmt: skip
        if share and n_units < 2:  # measured, but there is no second unit to give the small tier
            note = "; tiered routing measured but not projected: the fleet has one serving unit"
            return dataclasses.replace(whole, provenance=whole.provenance + note)
        return whole
    small = np.random.default_rng(0).random(len(trace.arrival_s)) < share
    on_small = dataclasses.replace(work, bytes_per_weight=None, accepted_draft_tokens_per_step=0.0,
                                   proposed_draft_tokens_per_step=None, activation_sparsity=0.0)  # fmt: skip
    small_dep = small_tier_deployment(scenario)
    tiers = ((~small, scenario.model.spec(), work, dep), (small, scenario.model.small_spec(), on_small, small_dep))
    horizon_s = float(trace.arrival_s.max()) + 1e-9

    def tier(k: int, fleet_units: int) -> FleetProjection:
        """Tier k on the device slots of `fleet_units` of the fleet's serving units."""
        mask, spec, w, d = tiers[k]
        arrays = (trace.arrival_s[mask], trace.prompt_tokens[mask], trace.output_tokens[mask])
        return project_trace(*arrays, spec, d, fleet_units * dep.n_devices, scenario.fleet.max_batch, bin_s, work=w,
                             horizon_s=horizon_s)  # fmt: skip

    if not small.any():
        return tier(0, n_units)
    if small.all():  # nothing left for the served model: the small tier in every slot
        return pooled(None, tier(1, n_units), scenario.model.small_preset, small_dep)
    unit_s = [  # unit-seconds of each tier's work at one unit's full-batch rate
        float(trace.output_tokens[m].sum())
        / unit_capacity_tokens_per_s(trace.prompt_tokens[m], trace.output_tokens[m], spec, d, scenario.fleet.max_batch,
                                     work=w)
        for m, spec, w, d in tiers
    ]  # fmt: skip
    n_large, n_small = pool_split(n_units, *unit_s)
    return pooled(tier(0, n_large), tier(1, n_small), scenario.model.small_preset, small_dep)


def small_tier_deployment(scenario: Scenario) -> Deployment:
    """Where the fleet's small tier runs: `fleet.small_tier_accelerator` (one device per unit, at its TDP),
    else units like the fleet's own."""
    name = scenario.fleet.small_tier_accelerator
    return Deployment(get_accelerator(name)) if name else deployment(scenario)


def accelerator_design_w(scenario: Scenario, proj: FleetProjection) -> float:
    """The fleet's accelerators at their power ceiling: what the facility is sized for (a small-tier pool
    on other accelerators at theirs)."""
    ceiling = deployment(scenario).power_ceiling_w
    pool = proj.small_tier
    if pool is None:
        return scenario.fleet.count * ceiling
    return (proj.n_devices - pool.devices) * ceiling + pool.devices * pool.power_ceiling_w


def facility_inputs(scenario: Scenario, proj: FleetProjection) -> tuple[np.ndarray, Clock, float]:
    """(board power per step, clock, design board power) for the twin: the fleet's board power series
    (devices + hosts, one value per projection bin) filling the facility horizon as `facility.load_shape`
    says — repeated back to back, or stretched to a day and repeated — with its energy conserved (the
    trace covers minutes, the facility a year: an assumption, stated in the provenance), and a plant
    sized for the fleet at TDP."""
    fac = scenario.facility
    host_w = fac.host_w_per_device * scenario.fleet.count
    clock = Clock(fac.step_s, max(1, round(fac.horizon_days * 86400 / fac.step_s)))
    board_w = load_on_clock(proj.device_power_w + host_w, proj.bin_s, clock, fac.load_shape)
    design_w = accelerator_design_w(scenario, proj) + host_w
    return board_w, clock, design_w


def run_facility(scenario: Scenario, proj: FleetProjection) -> TwinResult:
    """The facility twin over its horizon for the projected fleet."""
    board_w, clock, design_w = facility_inputs(scenario, proj)
    return run_twin(scenario.facility.config(), board_w, clock, design_board_w=design_w)


def controlled_facility(scenario: Scenario, proj: FleetProjection) -> tuple[TwinResult, ControlOutcome]:
    """The facility horizon with the `[control]` controller in the loop, and what it saved against the
    same load at the facility's fixed setpoints (both runs here)."""
    from joulepath.control import run_controlled_twin

    board_w, clock, design_w = facility_inputs(scenario, proj)
    c = scenario.control
    cfg = scenario.facility.config()
    fixed = run_twin(cfg, board_w, clock, design_board_w=design_w)
    twin = run_controlled_twin(cfg, board_w, clock, control_config(c), design_board_w=design_w).twin
    day_steps = max(1, round(86400 / clock.dt_s))
    outcome = ControlOutcome(
        c.controller,
        _energy_j(fixed, "cooling_power_w"),
        _energy_j(twin, "cooling_power_w"),
        fixed.metrics.facility_energy_j,
        twin.metrics.facility_energy_j,
        twin.metrics.inlet_violation_steps,
        tuple(float(v) for v in interval_means(fixed.series["cooling_power_w"], day_steps)),
        tuple(float(v) for v in interval_means(twin.series["cooling_power_w"], day_steps)),
        f"estimated: facility twin, {c.controller} controller vs the preset's fixed setpoints, same IT load",
    )
    return twin, outcome


CAP_FRACS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)  # of TDP: the power limits `power_cap = "auto"` weighs


def choose_power_cap(scenario: Scenario, trace: Trace) -> PowerCapChoice | None:
    """Zeus-style: the power limit with the least device J/token whose p99 TPOT stays within the latency
    bound (joulepath.control.power over the hardware model, estimated); None when off or the fleet's limit
    is set by hand."""
    c = scenario.control
    if not c.enabled or c.power_cap == "off" or scenario.fleet.power_limit_w is not None:
        return None
    from joulepath.control.power import Trace as CapTrace
    from joulepath.control.power import cap_curve, choose_cap

    dep = deployment(scenario)
    requests = CapTrace(trace.arrival_s, trace.prompt_tokens.astype(float), trace.output_tokens.astype(float))
    fracs = np.array(CAP_FRACS)
    points = cap_curve(
        requests, scenario.model.spec(), dep, scenario.fleet.count, fracs, None, c.cap_static_power_scales
    )
    reading = "all power above idle scales with the clock" if c.cap_static_power_scales else "static power held"
    try:
        best = choose_cap(points, c.latency_bound_pct)
    except ValueError:  # even the uncapped point is outside the model's consistent range (e.g. an assumed TDP)
        reading += "; no limit could be weighed consistently, so none is applied"
        best = dataclasses.replace(points[0], cap_w=dep.tdp_w, j_saving_pct=0.0, p99_slowdown_pct=0.0)
    return PowerCapChoice(
        dep.tdp_w, best.cap_w, best.j_saving_pct, best.p99_slowdown_pct, c.latency_bound_pct,
        c.cap_static_power_scales, tuple((p.cap_w, p.j_saving_pct, p.p99_slowdown_pct, p.consistent) for p in points),
        f"estimated: hardware model (joulepath.control.power), {reading}",
    )  # fmt: skip


def with_cap(scenario: Scenario, cap: PowerCapChoice | None) -> Scenario:
    """The scenario whose fleet runs at the chosen power limit (unchanged when none is applied)."""
    return _with_power_limit(scenario, cap.cap_w) if cap is not None and cap.applied else scenario


def _with_power_limit(scenario: Scenario, cap_w: float) -> Scenario:
    return scenario.model_copy(update={"fleet": scenario.fleet.model_copy(update={"power_limit_w": cap_w})})


def control_config(section: ControlSection) -> ControlConfig:
    """The control package's configuration for a scenario's `[control]` section."""
    from joulepath.control import ControlConfig

    return ControlConfig(section.controller, section.interval_s, section.horizon_intervals, section.inlet_margin_k)


def _energy_j(twin: TwinResult, series: str) -> float:
    return float(twin.series[series].sum() * twin.clock.dt_s)


def facility_ratios(twin: TwinResult) -> FacilityRatios:
    """The ledger's facility stages as ratios to board energy, from the twin's totals."""
    s, dt = twin.series, twin.clock.dt_s
    board_j = float((s["it_power_w"] - s["server_fan_w"] - s["it_conversion_loss_w"]).sum() * dt)
    stage_j = {
        "it_overhead": float((s["server_fan_w"] + s["it_conversion_loss_w"]).sum() * dt),
        "power_chain": float(s["chain_loss_w"].sum() * dt),
        "cooling": float(s["cooling_power_w"].sum() * dt),
        "auxiliary": float(s["aux_power_w"].sum() * dt),
    }
    days = twin.clock.horizon_s / 86400
    provenance = f"{twin.metrics.provenance}; the trace's board power series over {days:g} days"
    return FacilityRatios(tuple((k, v / board_j) for k, v in stage_j.items()), provenance)


def _summarise(
    proj: FleetProjection, waterfall: Waterfall, twin: TwinResult, scenario: Scenario, horizon_s: float
) -> Summary:
    board_w = proj.device_power_w + scenario.facility.host_w_per_device * scenario.fleet.count
    it_power = board_w * waterfall.it_j / (waterfall.stage("device").energy_j + waterfall.stage("host").energy_j)
    served = max(proj.total_served_tokens, 1e-9)
    m = twin.metrics
    wall_kwh, it_kwh = waterfall.wall_j / 3.6e6, waterfall.it_j / 3.6e6
    return Summary(
        capacity_tokens_per_s=proj.capacity_tokens_per_s,
        utilisation=proj.utilisation,
        served_output_tokens=proj.total_served_tokens,
        unserved_output_tokens=float(proj.backlog_tokens[-1]),
        device_j_per_token=proj.device_energy_j / served,
        wall_j_per_token=waterfall.wall_j / served,
        avg_it_power_w=float(np.mean(it_power)),
        peak_it_power_w=float(np.max(it_power)),
        device_energy_j=proj.device_energy_j,
        it_energy_j=waterfall.it_j,
        wall_energy_j=waterfall.wall_j,
        horizon_s=horizon_s,
        pue=m.pue,
        wue_l_per_kwh=m.wue_l_per_kwh,
        water_l=m.wue_l_per_kwh * it_kwh,
        carbon_g=m.carbon_g / (m.facility_energy_j / 3.6e6) * wall_kwh,
        cost_usd=m.cost_usd / (m.facility_energy_j / 3.6e6) * wall_kwh,
        provenance=f"{waterfall.stage('device').provenance}; facility: {m.provenance}; host: scenario assumption",
    )


def _data_movement(spec: TransformerSpec, dep: Deployment, proj: FleetProjection, trace: Trace) -> DataMovement:
    """Per-token data movement of a decode step at the served-token-weighted mean batch."""
    busy = proj.served_tokens > 0
    batch = float(np.average(proj.batch_per_unit[busy], weights=proj.served_tokens[busy])) if busy.any() else 1.0
    batch = max(batch, 1.0)
    context = float(trace.prompt_tokens.mean() + trace.output_tokens.mean() / 2)
    step = decode_step(spec, dep, batch, context)
    energy = {k: (v / batch if v is not None else None) for k, v in step.movement_energy_j(dep).items()}
    return DataMovement(batch, step.hbm_bytes / batch, step.link_bytes / batch, energy, step.provenance)


class RunDirError(ValueError):
    """An output folder a run cannot be written into; the message says why and what to do."""


def _free_run_path(base: Path, name: str, stamp: str) -> Path:
    """`base/<stamp>-<name>[-n]`: the first such path not taken. `name` must be a safe slug (one folder)."""
    if not SAFE_NAME.fullmatch(name):
        raise RunDirError(f"run name {name!r} is not a safe folder name (letters, digits, '.', '_', '-')")
    candidate = base / f"{stamp}-{name}"
    n = 1
    while candidate.exists():
        n += 1
        candidate = base / f"{stamp}-{name}-{n}"
    return candidate


def new_run_dir(base: Path, name: str, stamp: str) -> Path:
    """A fresh folder `base/<stamp>-<name>[-n]`; an existing run is never overwritten."""
    candidate = _free_run_path(base, name, stamp)
    candidate.mkdir(parents=True)
    return candidate


def staging_run_dir(base: Path, name: str, stamp: str) -> Path:
    """Check the output folder `base` (a folder, creatable, writable) and make the hidden folder a run is
    written into, `base/.<stamp>-<name>.<random>.incomplete`. Call it before any work starts; `publish_run_dir`
    renames it once every file is in it, so an interrupted run never leaves a folder that looks complete."""
    _free_run_path(base, name, stamp)  # refuses an unsafe name before anything is created
    if base.exists() and not base.is_dir():
        raise RunDirError(f"output folder {base} is a file; give a folder (--out DIR, or output.dir in the scenario)")
    try:
        base.mkdir(parents=True, exist_ok=True)
        staging = base / f".{stamp}-{name}.{uuid.uuid4().hex[:8]}.incomplete"  # unique: runs may share a second
        staging.mkdir()  # not tempfile.mkdtemp: its 0o700 would stay on the published run folder
        return staging
    except OSError as exc:
        raise RunDirError(
            f"cannot write a run into the output folder {base} ({exc.strerror or exc}); choose another with --out DIR"
        ) from None


def publish_run_dir(staging: Path, base: Path, name: str, stamp: str) -> Path:
    """Rename a finished staging folder to a fresh `base/<stamp>-<name>[-n]` (never over an existing run)."""
    final = _free_run_path(base, name, stamp)
    staging.rename(final)
    return final


def discard_run_dir(staging: Path) -> None:
    """Remove an unfinished staging folder (a failed or interrupted run); nothing else is touched."""
    shutil.rmtree(staging, ignore_errors=True)
