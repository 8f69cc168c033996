"""Energy backends: NVML (GPU energy counter), RAPL (powercap sysfs), a CPU utilisation model, and a
replay backend for tests. `select_backends()` picks what this machine offers and says why."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from joulepath.hw.catalog import Accelerator, local_cpu
from joulepath.meter.base import EnergyBackend, Reading

RAPL_ROOT = Path("/sys/class/powercap")


class NvmlBackend(EnergyBackend):
    """GPU energy from NVML's total-energy counter (mJ since driver load; Volta and newer)."""

    name = "nvml"

    def __init__(self, nvml_module: Any | None = None) -> None:
        nvml: Any = nvml_module
        if nvml is None:
            import pynvml  # nvidia-ml-py

            nvml = pynvml
        self._nvml = nvml
        nvml.nvmlInit()
        count = nvml.nvmlDeviceGetCount()
        if count == 0:
            raise RuntimeError("NVML found no GPUs")
        self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]

    def components(self) -> list[str]:
        return [f"gpu:{i}" for i in range(len(self._handles))]

    def provenance(self) -> str:
        return "measured:nvml"

    def read(self) -> Reading:
        return {
            f"gpu:{i}": float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(h)) / 1e3
            for i, h in enumerate(self._handles)
        }

    def energy_between(self, start: Reading, end: Reading) -> dict[str, float]:
        return {k: end[k] - start[k] for k in start}


class RaplBackend(EnergyBackend):
    """CPU package and DRAM energy from Linux powercap (`intel-rapl:N/energy_uj`).

    Counters wrap at `max_energy_range_uj`; one wrap per window is corrected (windows longer than a
    wrap period, minutes at full load, would need periodic reads). Sub-zones `core`/`uncore` are
    inside their package and are not added again; `dram` is outside the package and is added;
    `psys` (platform) overlaps everything and is skipped when packages are present."""

    name = "rapl"

    def __init__(self, root: Path = RAPL_ROOT) -> None:
        self._zones: dict[str, tuple[Path, float]] = {}
        for zone in sorted(root.glob("intel-rapl:*")):
            label = (zone / "name").read_text().strip()
            depth = zone.name.count(":")
            if depth == 1 and label.startswith("package"):
                self._add(f"cpu:{label}", zone)
            elif label == "dram":
                parent = zone.name.rsplit(":", 1)[0] if depth == 2 else zone.name
                self._add(f"dram:{parent.split(':', 1)[1]}", zone)
        if not self._zones:
            psys = [z for z in root.glob("intel-rapl:*") if (z / "name").read_text().strip() == "psys"]
            for zone in psys:
                self._add("cpu:psys", zone)
        if not self._zones:
            raise RuntimeError(f"no readable RAPL zones under {root}")

    def _add(self, key: str, zone: Path) -> None:
        energy = zone / "energy_uj"
        energy.read_text()  # raises PermissionError when not readable (common without root)
        max_range = float((zone / "max_energy_range_uj").read_text())
        self._zones[key] = (energy, max_range)

    def components(self) -> list[str]:
        return list(self._zones)

    def provenance(self) -> str:
        return "measured:rapl"

    def read(self) -> Reading:
        return {k: float(path.read_text()) for k, (path, _) in self._zones.items()}

    def energy_between(self, start: Reading, end: Reading) -> dict[str, float]:
        out = {}
        for key, (_, max_range) in self._zones.items():
            delta = end[key] - start[key]
            if delta < 0:  # the counter wrapped once
                delta += max_range
            out[key] = delta / 1e6
        return out


class CpuEstimateBackend(EnergyBackend):
    """Estimated CPU energy of this process from measured CPU time and the catalog's TDP per core:

        energy = idle_fraction x TDP_share x wall_s + (1 - idle_fraction) x W_per_core x cpu_s

    where TDP_share = usable cores x W/core and cpu_s is this process's own CPU seconds in the window
    (all its threads, `time.process_time`): not other processes', and not its children's (`os.times`
    adds reaped children, which a window around `subprocess.run` would wrongly count as this work).
    idle_fraction = 0.3 is an assumption (servers idle near a third of TDP), not a measurement; the
    idle share is charged to this process for every wall second, as if it had its cores to itself
    (see docs/meter.md)."""

    name = "cpu-estimate"
    IDLE_FRACTION = 0.3

    def __init__(
        self,
        cpu: Accelerator | None = None,
        clock: Callable[[], float] = time.perf_counter,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self.cpu = cpu or local_cpu()
        assert self.cpu.tdp_w is not None and self.cpu.cores
        self._per_core_w = self.cpu.tdp_w / self.cpu.cores
        self._clock = clock
        self._cpu_clock = cpu_clock  # this process's user + system CPU seconds, all threads, no children

    def components(self) -> list[str]:
        return ["cpu:process"]

    def provenance(self) -> str:
        return f"estimated:cpu-utilisation x {self._per_core_w:.2f} W/core ({self.cpu.source.split('power: ')[-1]})"

    def read(self) -> Reading:
        return {"wall_s": self._clock(), "cpu_s": self._cpu_clock()}

    def energy_between(self, start: Reading, end: Reading) -> dict[str, float]:
        assert self.cpu.tdp_w is not None
        wall = end["wall_s"] - start["wall_s"]
        cpu_s = min(end["cpu_s"] - start["cpu_s"], wall * (self.cpu.cores or 1))
        idle = self.IDLE_FRACTION * self.cpu.tdp_w * wall
        dynamic = (1 - self.IDLE_FRACTION) * self._per_core_w * cpu_s
        return {"cpu:process": idle + dynamic}


class ReplayBackend(EnergyBackend):
    """Replays constant or scripted power per component against a clock (tests, demos).

    `power_w` maps component -> watts, or -> a function of time (s) returning watts; energy is the
    trapezoid integral of power over the window."""

    name = "replay"

    def __init__(
        self,
        power_w: dict[str, float | Callable[[float], float]],
        clock: Callable[[], float] = time.perf_counter,
        steps: int = 64,
    ) -> None:
        self._power = power_w
        self._clock = clock
        self._steps = steps

    def components(self) -> list[str]:
        return list(self._power)

    def provenance(self) -> str:
        return "replay"

    def read(self) -> Reading:
        return {"t": self._clock()}

    def energy_between(self, start: Reading, end: Reading) -> dict[str, float]:
        t0, t1 = start["t"], end["t"]
        out = {}
        for comp, p in self._power.items():
            if callable(p):
                dt = (t1 - t0) / self._steps
                samples = [p(t0 + i * dt) for i in range(self._steps + 1)]
                out[comp] = dt * (sum(samples) - 0.5 * (samples[0] + samples[-1]))
            else:
                out[comp] = float(p) * (t1 - t0)
        return out


def select_backends(rapl_root: Path = RAPL_ROOT) -> tuple[list[EnergyBackend], list[str]]:
    """Pick every backend this machine supports: NVML for GPUs; RAPL for the CPU, else the CPU
    estimate. Returns the backends and one note per decision, for printing."""
    backends: list[EnergyBackend] = []
    notes = []
    try:
        backends.append(NvmlBackend())
        notes.append(f"gpu: measured by NVML ({len(backends[-1].components())} device(s))")
    except Exception as exc:  # no driver, no library, no GPU: all mean "no GPU to measure"
        notes.append(f"gpu: none measured (NVML unavailable: {type(exc).__name__}: {exc})")
    try:
        backends.append(RaplBackend(rapl_root))
        notes.append("cpu: measured by RAPL (powercap sysfs)")
    except (OSError, RuntimeError) as exc:
        backends.append(CpuEstimateBackend())
        notes.append(f"cpu: ESTIMATED from CPU time x catalog W/core (no RAPL: {exc})")
    return backends, notes
