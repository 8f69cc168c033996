"""The main job, `joulepath run`: scenario -> trace -> projection onto the fleet (hardware model) ->
ledger (device -> node -> facility) -> result.json. Later stages (real execution on the engine, the
hot-path profile, the facility twin, the HTML report) join this same pipe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from joulepath.hw import Deployment, get_accelerator
from joulepath.hw.fleet import FleetProjection, project_trace
from joulepath.hw.perf import TransformerSpec, calibrated_efficiency, decode_step
from joulepath.meter import FacilityAssumption, Measurement, NodeAssumption, Waterfall, auto_meter, rollup
from joulepath.scenario import Scenario, WorkloadSection
from joulepath.workload import SyntheticParams, Trace, TraceStats, generate, read_azure_csv, trace_stats

SCHEMA_VERSION = "1.0"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Summary:
    """Headline numbers of a run. Every field is an estimate of the target fleet (see `provenance`)."""

    capacity_tokens_per_s: float
    utilisation: float
    served_output_tokens: float
    unserved_output_tokens: float  # still queued at the end of the horizon
    device_j_per_token: float
    wall_j_per_token: float
    avg_it_power_w: float
    peak_it_power_w: float
    device_energy_j: float
    it_energy_j: float
    wall_energy_j: float
    horizon_s: float
    provenance: str


@dataclass(frozen=True)
class DataMovement:
    """Bytes moved per output token at the run's typical batch, and their energy per memory level
    (None where the level's pJ/bit is not published). Estimates from the hardware model."""

    batch: float
    hbm_bytes_per_token: float
    link_bytes_per_token: float
    energy_j_per_token: dict[str, float | None]
    provenance: str


@dataclass(frozen=True)
class RunResult:
    """Everything a run produced; `report.write_result` serialises it (schema `SCHEMA_VERSION`)."""

    scenario: Scenario
    trace: TraceStats
    trace_source: str
    projection: FleetProjection
    waterfall: Waterfall
    summary: Summary
    data_movement: DataMovement
    efficiency_source: str
    meter_notes: list[str]
    analysis_energy: Measurement  # what this analysis itself cost on this machine


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
    """Run the analytic pipeline for `scenario` (no files written; see `report.write_result`)."""
    meter = auto_meter()
    meter.begin("analysis")
    progress("trace")
    trace = build_trace(scenario.workload)
    if len(trace) == 0:
        raise ValueError("the workload produced no requests in the horizon; raise workload.duration_s or the rate")
    progress("projection")
    spec, dep = scenario.model.spec(), deployment(scenario)
    bin_s = max(1.0, scenario.workload.duration_s / 60)
    proj = project_trace(
        trace.arrival_s,
        trace.prompt_tokens,
        trace.output_tokens,
        spec,
        dep,
        scenario.fleet.count,
        scenario.fleet.max_batch,
        bin_s,
    )
    progress("ledger")
    horizon_s = bin_s * len(proj.t_s)
    fac = scenario.facility
    device_provenance = proj.provenance
    if scenario.fleet.assumed_tdp_w:
        device_provenance += f"; TDP assumed {scenario.fleet.assumed_tdp_w:g} W (fleet.assumed_tdp_w)"
    waterfall = rollup(
        proj.device_energy_j,
        device_provenance,
        horizon_s,
        scenario.fleet.count,
        NodeAssumption(fac.host_w_per_device, fac.host_source),
        FacilityAssumption(fac.pue, fac.pue_source),
    )
    summary = _summarise(proj, waterfall, scenario, horizon_s)
    movement = _data_movement(spec, dep, proj, trace)
    analysis = meter.end("analysis")
    return RunResult(
        scenario,
        trace_stats(trace),
        trace.source,
        proj,
        waterfall,
        summary,
        movement,
        calibrated_efficiency().source,
        meter.notes,
        analysis,
    )


def _summarise(proj: FleetProjection, waterfall: Waterfall, scenario: Scenario, horizon_s: float) -> Summary:
    it_power = proj.device_power_w + scenario.facility.host_w_per_device * scenario.fleet.count
    served = max(proj.total_served_tokens, 1e-9)
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
        provenance=f"{waterfall.stage('device').provenance}; host and facility: assumptions from the scenario",
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


def new_run_dir(base: Path, name: str, stamp: str) -> Path:
    """A fresh folder `base/<stamp>-<name>[-n]`; an existing run is never overwritten."""
    candidate = base / f"{stamp}-{name}"
    n = 1
    while candidate.exists():
        n += 1
        candidate = base / f"{stamp}-{name}-{n}"
    candidate.mkdir(parents=True)
    return candidate
