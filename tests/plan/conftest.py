"""Small planning questions the plan tests share."""

import pytest

from joulepath.hw import get_model_preset
from joulepath.plan import Demand, PlanInputs, SearchSpace, Site, Slo


@pytest.fixture
def inputs_70b() -> PlanInputs:
    """Llama-3.1-70B, 50k output tokens/s all day, p99 TTFT 2 s and TPOT 150 ms, 50 MW; a week of the twin."""
    return PlanInputs(
        get_model_preset("llama-3.1-70b"),
        Demand.flat(50_000.0, 1000, 250),
        Slo(ttft_p99_s=2.0, tpot_p99_s=0.15),
        Site(feed_mw=50.0),
        space=SearchSpace(
            accelerators=("h100-sxm", "gb200"), tensor_parallel=(2, 4), batch_caps=(64, 256), power_cap_fracs=(1.0, 0.7)
        ),
        facility_days=7.0,
    )
