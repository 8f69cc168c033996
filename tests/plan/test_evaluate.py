import dataclasses

import pytest

from joulepath.hw import get_model_preset
from joulepath.plan import Candidate, PlanInputs, Site, Slo, evaluate
from joulepath.plan.evaluate import deployment_of, model_spec
from joulepath.plan.unit import colocated, decode_only, kv_transfer

H100 = Candidate("h100-sxm", 4, 64, "fp8", 1.0, False, "hyperscale-liquid")


def test_a_feasible_candidate_has_every_outcome_and_wall_above_device_energy(inputs_70b: PlanInputs) -> None:
    ev = evaluate(H100, inputs_70b)
    assert ev.feasible, ev.reason
    assert ev.n_devices % 4 == 0 and ev.racks >= 1
    assert ev.wall_j_per_token > ev.device_j_per_token > 0
    assert 1.0 < ev.pue < 1.5 and ev.cost_usd_per_mtok > 0 and ev.carbon_g_per_token > 0
    assert ev.slo_headroom_frac >= 0
    assert "estimated" in ev.provenance


def test_weights_that_do_not_fit_are_rejected_for_memory(inputs_70b: PlanInputs) -> None:
    inputs = dataclasses.replace(inputs_70b, model=get_model_preset("llama-3.1-405b"))
    ev = evaluate(dataclasses.replace(H100, tensor_parallel=1, precision="bf16"), inputs)
    assert ev.reason.startswith("memory")


def test_a_tight_tpot_slo_rejects_and_names_the_latency(inputs_70b: PlanInputs) -> None:
    ev = evaluate(H100, dataclasses.replace(inputs_70b, slo=Slo(tpot_p99_s=0.005)))
    assert ev.reason.startswith("SLO: p99 TPOT") and ev.tpot_p99_s > 0.005


def test_an_nvl72_rack_needs_liquid_cooling(inputs_70b: PlanInputs) -> None:
    gb = Candidate("gb200", 2, 64, "fp8", 1.0, False, "modern-air")
    assert evaluate(gb, inputs_70b).reason.startswith("rack density")
    assert evaluate(dataclasses.replace(gb, cooling="hyperscale-liquid"), inputs_70b).feasible


def test_a_small_feed_rejects_the_fleet(inputs_70b: PlanInputs) -> None:
    ev = evaluate(H100, dataclasses.replace(inputs_70b, site=Site(feed_mw=0.01)))
    assert ev.reason.startswith("feed")


def test_a_power_cap_lowers_device_energy_per_token(inputs_70b: PlanInputs) -> None:
    full, capped = evaluate(H100, inputs_70b), evaluate(dataclasses.replace(H100, power_cap_frac=0.6), inputs_70b)
    assert capped.device_j_per_token < full.device_j_per_token
    assert capped.tpot_p99_s >= full.tpot_p99_s


def test_decode_only_steps_carry_no_prefill_chunk(inputs_70b: PlanInputs) -> None:
    spec, dep = model_spec(inputs_70b.model, "fp8"), deployment_of(H100)
    co = colocated(spec, dep, 64, 1000, 250, 3000)
    dec = decode_only(spec, dep, 64, 1000, 250)
    assert dec.tpot_p99_s < co.tpot_p99_s  # the chunk is gone
    assert dec.itl_s == pytest.approx(co.itl_s, rel=0.05)
    assert dec.tokens_per_s > co.tokens_per_s  # no prefill compute in the decode pool


def test_kv_transfer_moves_prompt_times_kv_bytes_and_costs_less_inside_an_nvlink_domain() -> None:
    spec = model_spec(get_model_preset("llama-3.1-70b"), "fp8")
    dep = deployment_of(Candidate("gb200", 2, 64, "fp8", 1.0, True, "hyperscale-liquid"))
    inside, across = kv_transfer(spec, dep, 1000, 3000, True), kv_transfer(spec, dep, 1000, 3000, False)
    assert inside.bytes_per_request == pytest.approx(1000 * spec.kv_bytes_per_token)
    assert inside.energy_per_request_j < across.energy_per_request_j
    assert inside.time_p99_s < across.time_p99_s


def test_phase_split_pays_where_the_prefill_chunk_breaks_the_tpot_slo(inputs_70b: PlanInputs) -> None:
    c = Candidate("h100-sxm", 4, 256, "fp8", 1.0, False, "hyperscale-liquid")
    slo = Slo(ttft_p99_s=2.0, tpot_p99_s=0.08)
    inputs = dataclasses.replace(inputs_70b, slo=slo)
    co, split = evaluate(c, inputs), evaluate(dataclasses.replace(c, phase_split=True), inputs)
    assert co.reason.startswith("SLO") and split.feasible
    assert split.n_prefill_devices > 0 and split.kv_transfer_j_per_token > 0


def test_capex_counts_devices_racks_and_the_building_and_a_carbon_price_raises_cost(inputs_70b: PlanInputs) -> None:
    from joulepath.plan.evaluate import capex_usd
    from joulepath.plan.site import RackLayout

    prices = inputs_70b.prices
    layout = RackLayout("8-gpu servers", "liquid", 32, 2, 50.0)
    total, per_year = capex_usd("h100-sxm", 64, layout, 1e6, prices)
    p = prices.accelerator("h100-sxm")
    devices = 64 * (p.usd_per_device + p.usd_server_per_device)
    building = prices.facility_usd_per_mw_it * (1 + prices.liquid_premium_frac)
    assert total == pytest.approx(devices + 2 * prices.racks["liquid"].usd_per_rack + building)
    assert devices / prices.accelerator_years < per_year < total
    priced = dataclasses.replace(inputs_70b, prices=dataclasses.replace(prices, carbon_usd_per_t=100.0))
    base, taxed = evaluate(H100, inputs_70b), evaluate(H100, priced)
    assert taxed.cost_usd_per_mtok > base.cost_usd_per_mtok
    assert taxed.wall_j_per_token == base.wall_j_per_token
