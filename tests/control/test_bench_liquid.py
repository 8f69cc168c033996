"""The liquid-plant CDU study's core: four controllers on one climate, the chips' limit, the savings."""

from joulepath.bench import control_liquid as bench
from joulepath.facility import Clock
from joulepath.facility.weather import get_climate, synthetic_weather

CLOCK = Clock(3600.0, 24 * 14, start_hour_of_year=24 * 190)


def test_liquid_study_reports_the_lever_and_keeps_the_chips_below_their_limit() -> None:
    study = bench.liquid_study(True, {"hot": synthetic_weather(get_climate("hot-dry"), 0)}, CLOCK)
    by = {o["controller"]: o for o in study["outcomes"]}
    assert set(by) == {"fixed-18C", "g36-trim-respond", "mpc", bench.MPC_DESIGN_CDU}
    for name in ("fixed-18C", "g36-trim-respond", bench.MPC_DESIGN_CDU):
        assert by[name]["mean_cdu_flow_frac"] == 1.0
    assert by["mpc"]["mean_cdu_flow_frac"] < 1.0
    assert by["mpc"]["cdu_pump_mwh"] < by[bench.MPC_DESIGN_CDU]["cdu_pump_mwh"] < by["mpc"]["pump_mwh"]
    assert all(o["chip_over_limit_minutes"] == 0 for o in study["outcomes"])
    assert by["mpc"]["chip_max_c"] > by[bench.MPC_DESIGN_CDU]["chip_max_c"]  # less flow, a warmer chip
    row = study["savings_by_climate"]["hot"]
    assert row["cooling_vs_cdu_design_pct"] > 0 and row["cooling_vs_g36_pct"] > 0
    assert study["provenance"].startswith("estimated")
