import numpy as np
import pytest

from joulepath.run import (
    RunDirError,
    build_trace,
    discard_run_dir,
    new_run_dir,
    publish_run_dir,
    run,
    staging_run_dir,
)
from joulepath.scenario import Scenario, parse_scenario

from .conftest import shared_file

# Projection and facility only (real execution: test_pipeline.py), over four weeks of the facility instead of the
# default year: every figure these tests check is a sum or ratio over the horizon, and a year of the shifting
# policy's receding-horizon plans alone took ~40 s. The default year runs in test_cli.py and the main job.
ANALYTIC = {"serve": {"enabled": False}, "facility": {"horizon_days": 28}}


def test_default_run_energy_adds_up() -> None:
    result = run(parse_scenario(ANALYTIC))
    s, w = result.summary, result.waterfall
    assert w.wall_j == pytest.approx(sum(st.energy_j for st in w.stages))
    assert s.wall_energy_j == pytest.approx(w.wall_j)
    assert s.device_energy_j == pytest.approx(np.sum(result.projection.device_power_w) * result.projection.bin_s)
    assert s.wall_j_per_token == pytest.approx(w.wall_j / s.served_output_tokens)
    assert 0 < s.utilisation <= 1
    assert s.peak_it_power_w >= s.avg_it_power_w
    assert result.analysis_energy.total_energy_j > 0


def test_the_headline_waterfall_runs_from_brute_force_to_the_optimized_run() -> None:
    result = run(parse_scenario({**ANALYTIC, "control": {"cap_static_power_scales": True, "shifting": "auto"}}))
    steps = result.ablation
    levers = ["brute force", "continuous batching", "power cap", "cooling control (mpc)", "shifting + battery"]
    assert [s.lever for s in steps] == levers
    assert result.baseline is not None and steps[0].wall_j_per_token == result.baseline.summary.wall_j_per_token
    assert steps[-2].wall_j_per_token == pytest.approx(result.summary.wall_j_per_token)  # the optimized run
    assert all(s.local is None and s.acts_on == "fleet and facility" for s in steps[1:])  # nothing served
    assert (
        steps[1].wall_j_per_token < steps[0].wall_j_per_token and steps[3].wall_j_per_token < steps[2].wall_j_per_token
    )
    head = result.headline()
    assert head is not None and head.local_tokens_per_joule is None and head.accuracy_delta_pts is None
    assert head.wall_tokens_per_joule_ratio == pytest.approx(steps[0].wall_j_per_token / steps[-1].wall_j_per_token)
    sh = result.shift  # the optimized facility's deferrable work shifted against carbon and price, with a battery
    assert sh is not None and sh.missed_deadlines == 0 and sh.deferrable_share == pytest.approx(0.2)
    assert sh.cost_usd[1] < sh.cost_usd[0] and sh.co2_kg[2] is not None
    # The policy saves at most the oracle's saving (no deadline missed: its schedule is feasible for the oracle's
    # linear program), and more than nothing against run-now here (a regression check, not a guarantee).
    assert 0 < sh.oracle_fraction <= 1 + 1e-9
    assert sh.grid_energy_j[1] >= sh.grid_energy_j[0]  # the battery's round trip loses energy, never makes it
    assert steps[-1].carbon_g_per_token == pytest.approx(steps[-2].carbon_g_per_token * sh.co2_kg[1] / sh.co2_kg[0])
    off = run(parse_scenario(ANALYTIC))  # shifting is off by default (its step is not positive here)
    assert off.shift is None and off.ablation[-1].lever == "cooling control (mpc)"


def test_assumed_tdp_is_labelled_in_the_result() -> None:
    scenario = parse_scenario({**ANALYTIC, "fleet": {"accelerator": "tpu-v6e", "count": 4, "assumed_tdp_w": 300}})
    result = run(scenario)
    assert "TDP assumed 300 W" in result.waterfall.stage("device").provenance
    assert "TDP assumed 300 W" in result.summary.provenance


def test_time_scale_raises_load() -> None:
    base = build_trace(Scenario().workload)
    faster = build_trace(parse_scenario({"workload": {"time_scale": 16.0}}).workload)
    assert len(faster) == pytest.approx(2 * len(base), rel=0.1)


def test_azure_trace_scenario_runs() -> None:
    path = shared_file("azure_llm_inference_2023_conv.csv")
    scenario = parse_scenario({**ANALYTIC, "workload": {"kind": "azure_csv", "path": str(path), "duration_s": 600}})
    result = run(scenario)
    assert result.trace.n_requests > 2000 and result.trace_source.startswith("measured")


def test_run_dirs_are_unique(tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = new_run_dir(tmp_path, "x", "t")
    b = new_run_dir(tmp_path, "x", "t")
    assert a != b and a.exists() and b.exists()


def test_staging_folder_is_published_complete_and_never_over_a_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    staging = staging_run_dir(tmp_path / "runs", "x", "t")
    assert (
        staging.parent == tmp_path / "runs" and staging.name.startswith(".t-x.") and staging.name.endswith("complete")
    )
    (staging / "result.json").write_text("{}")
    existing = new_run_dir(tmp_path / "runs", "x", "t")
    final = publish_run_dir(staging, tmp_path / "runs", "x", "t")
    assert final.name == "t-x-2" and (final / "result.json").is_file() and not staging.exists()
    assert existing.is_dir() and not any(existing.iterdir())
    leftover = staging_run_dir(tmp_path / "runs", "x", "t")
    discard_run_dir(leftover)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["t-x", "t-x-2"]


def test_output_folder_that_is_a_file_or_a_name_that_escapes_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "f").write_text("")
    with pytest.raises(RunDirError, match="is a file"):
        staging_run_dir(tmp_path / "f", "x", "t")
    with pytest.raises(RunDirError, match="cannot write a run"):
        staging_run_dir(tmp_path / "f" / "sub", "x", "t")
    with pytest.raises(RunDirError, match="not a safe folder name"):
        staging_run_dir(tmp_path, "../../x", "t")
    with pytest.raises(RunDirError, match="not a safe folder name"):
        new_run_dir(tmp_path, "../x", "t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_main_job_refuses_serve_max_tokens_past_the_models_context() -> None:
    from joulepath.engine import ContextLengthError

    scenario = parse_scenario({"serve": {"max_tokens": 4000, "requests": 4, "profile": False}})
    with pytest.raises(ContextLengthError, match=r"serve.max_tokens = 4,000 .* jp-large's context of 2,048 tokens"):
        run(scenario)  # refused after loading the model, before anything is served


def test_main_job_refuses_a_prompt_longer_than_the_context() -> None:
    import dataclasses

    from joulepath.engine import ContextLengthError
    from joulepath.execute import check_context
    from joulepath.model import load_model
    from joulepath.quality.tasks import Example

    tiny = load_model("dummy:tiny-llama")
    short = dataclasses.replace(tiny, config=tiny.config.replace(max_position=150))
    examples = [Example("add", "easy", "What is 2 + 3?", "5"), Example("add", "easy", "x" * 80, "-")]
    check_context(tiny, examples, 40)
    with pytest.raises(ContextLengthError, match=r"served request r1 \(golden task add/easy\) is \d+ tokens"):
        check_context(short, examples, 1)


def test_a_measured_work_profile_reaches_device_facility_and_wall_energy() -> None:
    """Half of every prompt computed (as a prefix cache would measure): the one change in the work
    profile lowers the projected device energy, the facility's load and the wall energy per token."""
    from joulepath.hw import WorkProfile
    from joulepath.run import fleet_outcome

    scenario = parse_scenario(ANALYTIC)
    trace = build_trace(scenario.workload)
    full = fleet_outcome(scenario, trace, scenario.fleet.max_batch)
    half = fleet_outcome(scenario, trace, scenario.fleet.max_batch, WorkProfile(1, 100, 50, 10))
    assert half.summary.device_j_per_token < full.summary.device_j_per_token
    assert half.facility.metrics.it_energy_j < full.facility.metrics.it_energy_j
    assert half.summary.wall_j_per_token < full.summary.wall_j_per_token


def test_routed_requests_run_on_a_small_tier_pool_and_cost_less_at_the_wall() -> None:
    """The measured small-tier share moves that share of the trace to the fleet's small model on its own
    units: every token is still served, the fleet keeps its size, and the wall energy per token falls."""
    from joulepath.hw import WorkProfile
    from joulepath.run import fleet_outcome, project

    scenario = parse_scenario(ANALYTIC)
    trace = build_trace(scenario.workload)
    outcomes = [fleet_outcome(scenario, trace, 16, WorkProfile(small_tier_share=s)) for s in (0.0, 0.6, 1.0)]
    wall = [o.summary.wall_j_per_token for o in outcomes]
    assert wall[0] > wall[1] > wall[2]
    routed = project(scenario, trace, WorkProfile(small_tier_share=0.6))
    assert routed.total_served_tokens == pytest.approx(float(trace.output_tokens.sum()))
    assert routed.n_units * routed.devices_per_unit == scenario.fleet.count and "small-tier pool" in routed.provenance
    assert routed.small_tier is not None and routed.small_tier.model == "llama-3.2-1b"
    assert routed.small_tier.kind == "gpu" and 1 <= routed.small_tier.units < routed.n_units
    one = parse_scenario(ANALYTIC | {"fleet": {"count": 1}})  # one serving unit: no pool for a second tier
    assert project(one, trace, WorkProfile(small_tier_share=0.6)).small_tier is None
    everything = project(scenario, trace, WorkProfile(small_tier_share=1.0))
    assert everything.small_tier is not None and everything.small_tier.units == everything.n_units


def test_the_small_tier_can_run_on_an_npu_pool_and_a_tier_needs_a_servable_accelerator() -> None:
    from joulepath.hw import WorkProfile
    from joulepath.run import project

    npu = parse_scenario(ANALYTIC | {"fleet": {"small_tier_accelerator": "cloud-ai100-ultra"}})
    trace = build_trace(npu.workload)
    routed = project(npu, trace, WorkProfile(small_tier_share=0.6))
    assert routed.small_tier is not None and routed.small_tier.kind == "npu"
    assert routed.total_served_tokens == pytest.approx(float(trace.output_tokens.sum()))
    assert "cloud-ai100-ultra" in routed.provenance and "extrapolation" in routed.provenance
    # tensor-parallel units: each unit handed to the small tier gives its 4 device slots to 4 NPUs
    tp = parse_scenario(ANALYTIC | {"fleet": {"count": 16, "tensor_parallel": 4,
                                              "small_tier_accelerator": "cloud-ai100-ultra"}})  # fmt: skip
    mixed = project(tp, trace, WorkProfile(small_tier_share=0.6))
    pool = mixed.small_tier
    assert pool is not None and pool.devices == 4 * (4 - (mixed.n_units - pool.units)) and pool.devices == pool.units
    assert mixed.n_devices == 16
    from joulepath.run import accelerator_design_w

    assert accelerator_design_w(tp, mixed) == pytest.approx((16 - pool.devices) * 700 + pool.devices * 150)
    one = parse_scenario(ANALYTIC | {"fleet": {"count": 1}})
    assert "not projected" in project(one, trace, WorkProfile(small_tier_share=0.6)).provenance
    with pytest.raises(ValueError, match="small-tier accelerator"):
        parse_scenario({"fleet": {"small_tier_accelerator": "xeon-8480+"}})


def test_the_twin_gets_the_fleets_power_series_with_its_energy() -> None:
    from joulepath.run import facility_inputs, project

    for shape in ("repeat", "daily"):
        scenario = parse_scenario({**ANALYTIC, "facility": {"load_shape": shape, "horizon_days": 7}})
        proj = project(scenario, build_trace(scenario.workload))
        board_w, _, _ = facility_inputs(scenario, proj)
        host_w = scenario.facility.host_w_per_device * scenario.fleet.count
        assert board_w.mean() == pytest.approx(proj.device_power_w.mean() + host_w, rel=1e-3)
        spread_w = board_w.max() - board_w.min()
        trace_spread_w = proj.device_power_w.max() - proj.device_power_w.min()
        if shape == "daily":  # the trace's load shape stretched over each day (hourly means of its bins)
            assert spread_w > 0.3 * trace_spread_w
        else:  # a ten-minute trace repeated: each hourly step holds whole periods, its mean
            assert spread_w < 1e-6 * trace_spread_w
    with pytest.raises(ValueError, match="load_shape"):
        parse_scenario({"facility": {"load_shape": "stretch"}})


def test_the_control_section_cools_the_optimized_facility_and_says_what_it_saved() -> None:
    controlled = run(parse_scenario(ANALYTIC))  # [control] is on by default: MPC
    c = controlled.control
    assert c is not None and c.controller == "mpc" and c.inlet_violation_steps == 0
    assert c.cooling_j_controlled < c.cooling_j_fixed and 0 < c.facility_saving_frac < c.cooling_saving_frac
    assert controlled.baseline is not None and controlled.baseline.control is None  # the brute force keeps fixed
    assert len(c.cooling_w_fixed_daily) == len(c.cooling_w_controlled_daily) == 28  # one value a day
    plain = run(parse_scenario({**ANALYTIC, "control": {"enabled": False}}))
    assert plain.control is None
    assert controlled.summary.wall_energy_j < plain.summary.wall_energy_j  # the same load, less cooling
    assert plain.summary.served_output_tokens == controlled.summary.served_output_tokens


def test_the_power_cap_is_chosen_within_the_latency_bound_and_only_for_the_optimized_fleet() -> None:
    conservative = run(parse_scenario(ANALYTIC))  # [control] power_cap = "auto", static power held
    c = conservative.power_cap
    assert c is not None and not c.static_power_scales and c.cap_w == c.tdp_w  # nothing pays on that reading
    scaling = run(parse_scenario({**ANALYTIC, "control": {"cap_static_power_scales": True}}))
    s = scaling.power_cap
    assert s is not None and s.cap_w < s.tdp_w and s.p99_slowdown_pct <= s.latency_bound_pct and s.j_saving_pct > 0
    assert scaling.summary.device_energy_j < conservative.summary.device_energy_j  # the cap reached the projection
    assert scaling.baseline is not None and conservative.baseline is not None
    assert scaling.baseline.summary.device_energy_j == conservative.baseline.summary.device_energy_j  # uncapped
    by_hand = run(parse_scenario({**ANALYTIC, "fleet": {"power_limit_w": 500}}))
    assert by_hand.power_cap is None  # the user's own limit wins
