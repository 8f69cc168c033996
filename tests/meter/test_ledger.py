import numpy as np
import pytest

from joulepath.meter import IDLE, FacilityRatios, NodeAssumption, attribute, rollup


@pytest.mark.parametrize("seed", range(20))
def test_attribution_conserves_the_window_total(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 50))
    tokens = {f"r{i}": float(rng.integers(0, 4000)) for i in range(n)}
    energy = float(rng.uniform(0.1, 1e5))
    parts = attribute(energy, tokens)
    assert sum(parts.values()) == pytest.approx(energy, rel=0.01)
    assert sum(parts.values()) == pytest.approx(energy, rel=1e-9)


def test_attribution_is_proportional_and_idle_windows_are_booked() -> None:
    assert attribute(9.0, {"a": 2, "b": 1}) == {"a": 6.0, "b": 3.0}
    assert attribute(5.0, {"a": 0}) == {IDLE: 5.0}
    with pytest.raises(ValueError):
        attribute(1.0, {"a": -1})


def test_rollup_adds_host_and_facility_with_labels() -> None:
    w = rollup(1000.0, "measured:nvml", 10.0, 2, NodeAssumption(50.0, "test"), FacilityRatios.from_pue(1.5, "test"))
    assert w.stage("host").energy_j == pytest.approx(1000.0)
    assert w.it_j == pytest.approx(2000.0)
    assert w.wall_j == pytest.approx(3000.0)
    assert w.stage("device").provenance == "measured:nvml"
    assert w.stage("facility").provenance.startswith("assumed: PUE 1.5")


def test_pue_below_one_refused() -> None:
    with pytest.raises(ValueError, match="PUE"):
        FacilityRatios.from_pue(0.9, "x")


def test_twin_style_ratios_split_the_facility() -> None:
    ratios = FacilityRatios((("it_overhead", 0.1), ("power_chain", 0.05), ("cooling", 0.2)), "estimated: twin")
    w = rollup(800.0, "measured:nvml", 1.0, 1, NodeAssumption(200.0, "test"), ratios)
    assert w.it_j == pytest.approx(1100.0)  # devices + hosts + fans/PSU
    assert w.wall_j == pytest.approx(1000.0 * 1.35)
    with pytest.raises(ValueError):
        FacilityRatios((("x", -1.0),), "bad")
