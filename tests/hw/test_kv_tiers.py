"""Modelled KV tiers: catalog bandwidth and energy per bit, labelled estimated."""

import pytest

from joulepath.hw.kv_tiers import MODELLED_TIERS, modelled_tier


def test_modelled_tiers_use_the_catalog_and_say_estimated() -> None:
    cxl = modelled_tier("cxl-memory")
    assert cxl.bandwidth_gb_s == 63 and cxl.pj_per_bit == 20.3  # DDR5 behind the link
    assert cxl.seconds(63e9) == pytest.approx(1.0) and cxl.joules(1e12 / 8 / 20.3) == pytest.approx(1.0)
    for name in MODELLED_TIERS:
        assert modelled_tier(name).provenance.startswith("estimated")
    assert modelled_tier("hbm-pim").seconds(1e9) < cxl.seconds(1e9)


def test_an_unknown_modelled_tier_names_the_choices() -> None:
    with pytest.raises(ValueError, match="cxl-memory, hbm-pim"):
        modelled_tier("tape")
