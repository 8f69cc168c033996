"""The hardware catalog: accelerators, memory tiers and interconnects, read from TOML data files in
`hw/data/`, every number with its source. A figure no vendor publishes is `None` and named in
`not_published`; nothing here invents one.

    >>> get_accelerator("h100-sxm").memory_bandwidth_tb_s
    3.35
    >>> get_accelerator("h100-sxm").memory_capacity_bytes == 80 * 2**30
    True
"""

from __future__ import annotations

import functools
import os
import platform
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

#: Bytes in one GiB. Accelerator memory capacities are binary: a vendor's "80 GB" of HBM is 80 GiB
#: (HBM3 stacks hold 16 or 24 GiB; nvidia-smi shows 81,559 MiB on an H100 SXM). Bandwidths stay
#: decimal (TB/s = 1e12 bytes/s).
GIB = 2**30


class UnknownHardwareError(KeyError):
    """A catalog name that does not exist; the message lists the names that do."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Accelerator:
    """One accelerator (GPU, TPU, NPU) or DPU. Dense peak rates; `None` = not published."""

    name: str
    vendor: str
    kind: str
    source: str
    bf16_dense_tflops: float | None = None
    fp8_dense_tflops: float | None = None
    int8_dense_tops: float | None = None
    memory_type: str | None = None
    memory_capacity_gib: float | None = None  # the vendor's "GB" of device memory, which are GiB
    memory_bandwidth_tb_s: float | None = None
    tdp_w: float | None = None
    idle_w: float | None = None
    scale_up: str | None = None
    scale_up_domain: int | None = None
    network_gbps: float | None = None
    cores: int | None = None  # CPUs only
    match: str | None = None  # CPUs only: substring of the OS model name
    notes: str = ""
    not_published: tuple[str, ...] = field(default_factory=tuple)

    def peak_flops(self, dtype: str) -> float:
        """Dense peak FLOP/s for a compute dtype (`bf16`, `fp8`, `int8`); falls back to BF16 when the
        lower precision is not published (the model then assumes no speed-up from it)."""
        tflops = {"fp8": self.fp8_dense_tflops, "int8": self.int8_dense_tops}.get(dtype)
        if tflops is None:
            tflops = self.bf16_dense_tflops
        if tflops is None:
            raise ValueError(f"{self.name} publishes no tensor throughput; it cannot run a transformer model")
        return tflops * 1e12

    @property
    def memory_capacity_bytes(self) -> float | None:
        """Device memory in bytes (`memory_capacity_gib` x 2^30); None when not published. Every
        capacity consumer (KV-cache room, the fleet's batch limit) reads it here."""
        return None if self.memory_capacity_gib is None else self.memory_capacity_gib * GIB

    @property
    def memory_bandwidth_b_s(self) -> float:
        """Peak memory bandwidth in bytes/s."""
        if self.memory_bandwidth_tb_s is None:
            raise ValueError(f"{self.name} publishes no memory bandwidth")
        return self.memory_bandwidth_tb_s * 1e12


@dataclass(frozen=True)
class MemoryTier:
    """A memory level and the energy to move one bit through it (`None` = not published)."""

    name: str
    kind: str
    source: str
    bandwidth_gb_s: float | None = None
    energy_pj_per_bit: float | None = None
    notes: str = ""
    not_published: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Interconnect:
    """A link or fabric: per-device, per-direction bandwidth and energy per bit where published."""

    name: str
    kind: str
    source: str
    bandwidth_gb_s: float | None = None
    domain_size: int | None = None
    energy_pj_per_bit: float | None = None
    notes: str = ""
    not_published: tuple[str, ...] = field(default_factory=tuple)


def _read_table(filename: str) -> dict[str, dict[str, Any]]:
    text = resources.files("joulepath.hw").joinpath("data", filename).read_text(encoding="utf-8")
    return tomllib.loads(text)


def _build(cls: type, name: str, raw: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"catalog entry {name!r} has unknown fields {sorted(unknown)}; known: {sorted(known)}")
    values = dict(raw)
    values["not_published"] = tuple(values.get("not_published", ()))
    return cls(name=name, **values)


@functools.cache
def accelerators() -> dict[str, Accelerator]:
    """All catalog devices by name: accelerators, DPUs and host CPUs (the detected CPU: `local_cpu()`)."""
    return {k: _build(Accelerator, k, v) for k, v in _read_table("accelerators.toml").items()}


@functools.cache
def memories() -> dict[str, MemoryTier]:
    """All memory tiers by name."""
    return {k: _build(MemoryTier, k, v) for k, v in _read_table("memories.toml").items()}


@functools.cache
def interconnects() -> dict[str, Interconnect]:
    """All interconnects by name."""
    return {k: _build(Interconnect, k, v) for k, v in _read_table("interconnects.toml").items()}


def _lookup(table: dict[str, Any], name: str, what: str) -> Any:
    key = name.strip().lower()
    if key in table:
        return table[key]
    raise UnknownHardwareError(f"unknown {what} {name!r}; known: {', '.join(sorted(table))}")


def get_accelerator(name: str) -> Accelerator:
    """Look up an accelerator; `local-cpu` returns the detected CPU of this machine."""
    if name.strip().lower() == "local-cpu":
        return local_cpu()
    result: Accelerator = _lookup(accelerators(), name, "accelerator")
    return result


def get_memory(name: str) -> MemoryTier:
    """Look up a memory tier by name."""
    result: MemoryTier = _lookup(memories(), name, "memory tier")
    return result


def get_interconnect(name: str) -> Interconnect:
    """Look up an interconnect by name."""
    result: Interconnect = _lookup(interconnects(), name, "interconnect")
    return result


def cpu_model_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_power_per_core_w(model_name: str) -> tuple[float, str]:
    """TDP per core (W) of a CPU by its OS model name, and where the figure came from.

    Unknown models (virtual machines often report a generic name) get the median W/core of the
    catalog's CPUs, labelled as an estimate."""
    cpus = [a for a in accelerators().values() if a.kind == "cpu" and a.tdp_w and a.cores]
    for cpu in cpus:
        if cpu.match and cpu.match.lower() in model_name.lower():
            return cpu.tdp_w / cpu.cores, f"catalog: {cpu.name} ({cpu.source})"  # type: ignore[operator]
    per_core = sorted(c.tdp_w / c.cores for c in cpus)  # type: ignore[operator]
    median = per_core[len(per_core) // 2]
    return median, f"estimated: unknown CPU {model_name!r}, median TDP/core of {len(cpus)} catalog server CPUs"


@functools.cache
def local_cpu() -> Accelerator:
    """The CPU this process runs on, detected from the OS, with its TDP share when the model is known."""
    n_cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    model = cpu_model_name()
    per_core_w, how = cpu_power_per_core_w(model)
    return Accelerator(
        name="local-cpu",
        vendor="detected",
        kind="cpu",
        source=f"detected: {model}, {n_cpus} usable cores (os.sched_getaffinity); power: {how}",
        memory_type="host DRAM",
        cores=n_cpus,
        tdp_w=round(per_core_w * n_cpus, 2),
        notes="tdp_w is this process's share: usable cores x TDP per core",
        not_published=("bf16_dense_tflops", "memory_bandwidth_tb_s", "idle_w"),
    )
