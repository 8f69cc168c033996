"""Real NVML energy counters; runs on the device machine only (`pytest -m gpu`)."""

import time

import pytest

from joulepath.meter import Meter, NvmlBackend

pytestmark = pytest.mark.gpu


def test_nvml_energy_rises_under_load() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    meter = Meter([NvmlBackend()])
    meter.begin("idle")
    time.sleep(1.0)
    idle = meter.end("idle")
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    meter.begin("load")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 1.0:
        a @ a
    torch.cuda.synchronize()
    load = meter.end("load")
    assert idle.provenance["gpu:0"] == "measured:nvml"
    assert 10 < idle.average_power_w < load.average_power_w
