import subprocess
import sys
import types
from pathlib import Path

import pytest

from joulepath.meter import (
    CpuEstimateBackend,
    Meter,
    MeterError,
    NvmlBackend,
    RaplBackend,
    ReplayBackend,
    provenance_kind,
)
from joulepath.meter.backends import select_backends


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_replay_constant_and_scripted_power() -> None:
    clock = FakeClock()
    meter = Meter([ReplayBackend({"gpu:0": 300.0, "cpu": lambda t: 100.0 + 10.0 * t}, clock=clock)])
    meter.begin("w")
    clock.t = 2.0
    m = meter.end("w")
    assert m.energy_j["gpu:0"] == pytest.approx(600.0)
    assert m.energy_j["cpu"] == pytest.approx(220.0)  # integral of 100 + 10 t over [0, 2]
    assert m.provenance == {"gpu:0": "replay", "cpu": "replay"}


def test_windows_nest_and_misuse_is_reported() -> None:
    clock = FakeClock()
    meter = Meter([ReplayBackend({"gpu:0": 100.0}, clock=clock)])
    meter.begin("outer")
    clock.t = 1.0
    meter.begin("inner")
    clock.t = 3.0
    assert meter.end("inner").energy_j["gpu:0"] == pytest.approx(200.0)
    with pytest.raises(MeterError, match="already open"):
        meter.begin("outer")
    assert meter.end("outer").energy_j["gpu:0"] == pytest.approx(300.0)
    with pytest.raises(MeterError, match="never begun"):
        meter.end("outer")


def _zone(root: Path, name: str, label: str, energy_uj: int, max_uj: int = 1000) -> Path:
    zone = root / name
    zone.mkdir()
    (zone / "name").write_text(label + "\n")
    (zone / "energy_uj").write_text(str(energy_uj))
    (zone / "max_energy_range_uj").write_text(str(max_uj))
    return zone


def test_rapl_wraparound_and_no_double_counting(tmp_path: Path) -> None:
    pkg = _zone(tmp_path, "intel-rapl:0", "package-0", 900)
    _zone(tmp_path, "intel-rapl:0:0", "core", 500)  # inside the package: not added again
    dram = _zone(tmp_path, "intel-rapl:0:1", "dram", 100)  # outside the package: added
    _zone(tmp_path, "intel-rapl:1", "psys", 0)  # overlaps everything: skipped
    backend = RaplBackend(tmp_path)
    assert sorted(backend.components()) == ["cpu:package-0", "dram:0"]
    start = backend.read()
    (pkg / "energy_uj").write_text("100")  # wrapped: 900 -> 1000 -> 100 = 200 uJ
    (dram / "energy_uj").write_text("150")
    energy = backend.energy_between(start, backend.read())
    assert energy == {"cpu:package-0": pytest.approx(200e-6), "dram:0": pytest.approx(50e-6)}
    assert backend.provenance() == "measured:rapl"


def test_rapl_absent_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no readable RAPL"):
        RaplBackend(tmp_path)


def test_nvml_backend_reads_millijoule_counters() -> None:
    counters = {0: 1_000_000, 1: 2_000_000}
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetTotalEnergyConsumption=lambda h: counters[h],
    )
    backend = NvmlBackend(fake)
    start = backend.read()
    counters[0] += 5_000
    counters[1] += 1_500
    assert backend.energy_between(start, backend.read()) == {"gpu:0": 5.0, "gpu:1": 1.5}


def test_cpu_estimate_is_labelled_and_grows_with_work() -> None:
    backend = CpuEstimateBackend()
    assert backend.provenance().startswith("estimated")
    meter = Meter([backend])
    meter.begin("busy")
    sum(i * i for i in range(500_000))
    m = meter.end("busy")
    assert m.total_energy_j > 0 and m.is_estimated


def test_selection_says_it_is_estimating_without_rapl(tmp_path: Path) -> None:
    backends, notes = select_backends(rapl_root=tmp_path)
    if any(isinstance(b, NvmlBackend) for b in backends):
        pytest.skip("a GPU is present")
    assert any(isinstance(b, CpuEstimateBackend) for b in backends)
    assert any("ESTIMATED" in n for n in notes) and any(n.startswith("gpu: none") for n in notes)


BURN_ONE_CPU_SECOND = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass"


def test_cpu_estimate_counts_only_this_process_work() -> None:
    """A child process's CPU seconds (reaped inside the window, as `subprocess.run` does) are not this
    process's work: the estimate charges the idle share for the wall time and nothing for the child."""
    backend = CpuEstimateBackend()
    start = backend.read()
    subprocess.run([sys.executable, "-c", BURN_ONE_CPU_SECOND], check=True)
    end = backend.read()
    wall_s = end["wall_s"] - start["wall_s"]
    idle_j = CpuEstimateBackend.IDLE_FRACTION * (backend.cpu.tdp_w or 0.0) * wall_s
    dynamic_j = backend.energy_between(start, end)["cpu:process"] - idle_j
    per_core_w = (backend.cpu.tdp_w or 0.0) / (backend.cpu.cores or 1)
    assert dynamic_j < 0.5 * (1 - CpuEstimateBackend.IDLE_FRACTION) * per_core_w  # well under the child's 1 CPU-s


@pytest.mark.parametrize(
    ("label", "kind"),
    [
        ("measured:rapl", "measured"),
        ("mixed: measured:nvml, measured:rapl", "measured"),
        ("mixed: estimated:cpu-utilisation x 4.38 W/core (estimated: unknown CPU 'AMD EPYC', median), measured:nvml",
         "estimated"),
        ("estimated: roofline model calibrated on measured H100 data", "estimated"),
        ("assumed: 300 W per device", "assumed"),
        ("synthetic: climate 'temperate'", "synthetic"),
        ("replay", "replay"),
        ("none", "unknown"),
    ],
)  # fmt: skip
def test_provenance_kind_is_measured_only_when_every_part_is(label: str, kind: str) -> None:
    assert provenance_kind(label) == kind


def test_a_window_with_an_estimated_component_is_not_measured() -> None:
    class Measured(ReplayBackend):
        def provenance(self) -> str:
            return "measured:test"

    m = Meter([Measured({"gpu:0": 1.0}), CpuEstimateBackend()]).window("w")
    with m as out:
        pass
    assert out[0].provenance_kind == "estimated" and provenance_kind(out[0].provenance_summary) == "estimated"
