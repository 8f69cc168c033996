"""Energy measurement windows, Zeus-style: `meter.begin("prefill")` ... `meter.end("prefill")` returns
a `Measurement` with time, energy per component and each component's provenance
(`measured:nvml`, `measured:rapl`, `estimated:<model>`, `replay`).

Backends read raw counters; the meter subtracts readings taken at `begin` and `end`, so a window costs
two reads per backend and nothing in between.

    >>> from joulepath.meter import Meter, ReplayBackend
    >>> meter = Meter([ReplayBackend({"gpu:0": 300.0})])
    >>> meter.begin("step")
    >>> m = meter.end("step")
    >>> m.provenance["gpu:0"]
    'replay'
"""

from __future__ import annotations

import contextlib
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

Reading = dict[str, float]
TIME_PROVENANCE = "measured: time.perf_counter on this machine"  # every duration the meter and engine report
PROVENANCE_KINDS = ("measured", "estimated", "synthetic", "assumed", "replay", "unknown")  # strongest first
_LABEL_HEAD = re.compile(r"(?:^|mixed: |, )\s*(measured|estimated|synthetic|assumed|replay)\b")


def provenance_kind(label: str) -> str:
    """The kind of a provenance label (`measured:<how>`, `estimated:<model>`, `assumed:<source>`,
    `synthetic:<generator>` for fitted weather, grid and trace generators, `replay`, or a meter's
    `mixed: a, b`): `measured` only when every part was measured, else the weakest part's kind;
    `unknown` for a label that names none (never shown as measured).

    >>> provenance_kind("measured:rapl"), provenance_kind("mixed: estimated:cpu-utilisation, measured:nvml")
    ('measured', 'estimated')
    """
    heads = _LABEL_HEAD.findall(label.strip())
    if not heads:
        return "unknown"
    return max(heads, key=PROVENANCE_KINDS.index)


def weakest_kind(*labels: str) -> str:
    """The weakest kind among several provenance labels (a number built from them is no stronger).

    >>> weakest_kind("measured:nvml", "estimated:roofline model")
    'estimated'
    """
    return max((provenance_kind(label) for label in labels), key=PROVENANCE_KINDS.index, default="unknown")


class MeterError(RuntimeError):
    """Misuse of the meter (ending a window never begun, beginning one twice)."""


@dataclass(frozen=True)
class Measurement:
    """Energy of one named window. `energy_j` and `provenance` have the same keys (components)."""

    name: str
    start_unix_s: float
    duration_s: float
    energy_j: dict[str, float]
    provenance: dict[str, str]

    @property
    def total_energy_j(self) -> float:
        return float(sum(self.energy_j.values()))

    @property
    def average_power_w(self) -> float:
        return self.total_energy_j / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def is_estimated(self) -> bool:
        return any(p.startswith("estimated") for p in self.provenance.values())

    @property
    def provenance_kind(self) -> str:
        """`measured` only if every component was measured (see `provenance_kind`)."""
        return weakest_kind(*self.provenance.values())

    @property
    def provenance_summary(self) -> str:
        """One label for the whole window: `measured:...` only if every component was measured."""
        kinds = sorted(set(self.provenance.values()))
        return kinds[0] if len(kinds) == 1 else "mixed: " + ", ".join(kinds)


class EnergyBackend(ABC):
    """One source of energy readings for a set of components (one base class, several real backends)."""

    name: str = "backend"

    @abstractmethod
    def components(self) -> list[str]:
        """Component keys this backend reports, e.g. `gpu:0`, `cpu:package-0`."""

    @abstractmethod
    def provenance(self) -> str:
        """`measured:<how>` or `estimated:<model>`."""

    @abstractmethod
    def read(self) -> Reading:
        """A snapshot of raw counters (backend-defined keys)."""

    @abstractmethod
    def energy_between(self, start: Reading, end: Reading) -> dict[str, float]:
        """Joules per component between two snapshots."""

    def describe(self) -> str:
        return f"{self.name}: {', '.join(self.components())} -> {self.provenance()}"


@dataclass
class _Open:
    start_unix_s: float
    start_perf_s: float
    readings: list[Reading]


class Meter:
    """Named measurement windows over a set of backends; windows may nest and overlap."""

    def __init__(self, backends: list[EnergyBackend], notes: list[str] | None = None) -> None:
        if not backends:
            raise MeterError("a Meter needs at least one backend")
        self.backends = backends
        self.notes = notes or []  # why each backend was (not) chosen, for the user
        self._open: dict[str, _Open] = {}

    def begin(self, name: str) -> None:
        """Start window `name`."""
        if name in self._open:
            raise MeterError(f"window {name!r} is already open; end it first or use another name")
        readings = [b.read() for b in self.backends]
        self._open[name] = _Open(time.time(), time.perf_counter(), readings)

    def end(self, name: str) -> Measurement:
        """Close window `name` and return its energy."""
        if name not in self._open:
            raise MeterError(f"window {name!r} was never begun (open: {sorted(self._open) or 'none'})")
        end_perf = time.perf_counter()
        readings = [b.read() for b in self.backends]
        opened = self._open.pop(name)
        energy: dict[str, float] = {}
        provenance: dict[str, str] = {}
        for backend, r0, r1 in zip(self.backends, opened.readings, readings, strict=True):
            for comp, joules in backend.energy_between(r0, r1).items():
                energy[comp] = energy.get(comp, 0.0) + joules
                provenance[comp] = backend.provenance()
        return Measurement(name, opened.start_unix_s, end_perf - opened.start_perf_s, energy, provenance)

    @contextlib.contextmanager
    def window(self, name: str) -> Iterator[list[Measurement]]:
        """`with meter.window("x") as out: ...` then `out[0]` is the Measurement."""
        out: list[Measurement] = []
        self.begin(name)
        try:
            yield out
        finally:
            out.append(self.end(name))

    def describe(self) -> str:
        lines = [b.describe() for b in self.backends] + self.notes
        return "\n".join(lines)
