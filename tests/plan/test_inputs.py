from pathlib import Path

import numpy as np
import pytest

from joulepath.plan import Demand, default_prices
from joulepath.plan.toml_input import diurnal_curve, read_plan


def test_demand_from_requests_keeps_every_output_token_and_the_p99_prompt() -> None:
    rng = np.random.default_rng(0)
    arrival = np.sort(rng.uniform(0, 600, 500))
    prompt, output = rng.integers(10, 4000, 500).astype(float), rng.integers(1, 800, 500).astype(float)
    d = Demand.from_requests(arrival, prompt, output, n_bins=12)
    horizon_s = arrival.max() + 1e-9
    assert sum(d.tokens_per_s) * horizon_s / 12 == pytest.approx(output.sum())
    assert d.prompt_tokens_p99 == pytest.approx(np.percentile(prompt, 99))
    assert d.bin_s == 7200.0


def test_demand_rejects_a_p99_prompt_below_the_mean() -> None:
    with pytest.raises(ValueError, match="prompt_tokens_p99"):
        Demand((100.0,), 1000, 200, 500)


def test_diurnal_curve_has_the_asked_mean_and_peak() -> None:
    c = np.array(diurnal_curve(1000.0, 1.4, bins=96))
    assert c.mean() == pytest.approx(1000.0) and c.max() == pytest.approx(1400, rel=1e-3)
    assert int(np.argmax(c)) // 4 in (13, 14)  # peak in the afternoon


def test_price_table_names_a_source_and_a_kind_for_every_entry() -> None:
    p = default_prices()
    assert p.table_date
    for entry in [*p.accelerators.values(), *p.racks.values()]:
        assert entry.source and entry.kind in ("reported", "assumed")
    assert p.racks["air"].max_kw < p.racks["liquid"].max_kw


def test_read_plan_builds_inputs_and_names_unknown_keys(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('[plan]\nmodel = "llama-3.1-8b"\n[plan.demand]\nmean_tokens_per_s = 1000\n[plan.site]\nfeed_mw = 3\n')
    inputs = read_plan(f)
    assert inputs.model.name == "llama-3.1-8b" and inputs.site.feed_mw == 3
    assert inputs.demand.mean_tokens_per_s == pytest.approx(1000)
    f.write_text("[plan]\n[plan.demand]\nmean_tokens_per_s = 1000\n[plan.site]\nfeed_megawatts = 3\n")
    with pytest.raises(ValueError, match=r"feed_megawatts.*feed_mw"):
        read_plan(f)
