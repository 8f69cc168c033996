"""The energy ledger: one account of joules from a token on a device to the meter at the wall.

Two jobs:
1. Attribution. A measurement window's joules are shared across the requests it served by the
   documented rule in `attribute`: in proportion to the tokens each request had processed in the
   window (prompt tokens it prefilled plus tokens it generated). A window that served no request
   books its joules to `IDLE`. Parts sum to the window total (tested to 1e-9 relative).
2. Roll-up. Device joules -> node (host CPU, memory, NICs, fans: an assumed watts-per-device
   overhead until a measured host backend exists) -> facility stages (server fans and PSU losses,
   power chain, cooling, auxiliaries), each a ratio to board energy taken from the facility twin, or
   one labelled PUE assumption.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

IDLE = "idle"
IT_STAGES = ("device", "host", "it_overhead")  # it_overhead: server fans and PSU losses, inside IT


def attribute(energy_j: float, tokens_by_request: Mapping[str, float]) -> dict[str, float]:
    """Share `energy_j` across requests in proportion to tokens processed in the window.

    >>> attribute(10.0, {"a": 3, "b": 1})
    {'a': 7.5, 'b': 2.5}
    >>> attribute(4.0, {})
    {'idle': 4.0}
    """
    if any(t < 0 for t in tokens_by_request.values()):
        raise ValueError("token counts must be >= 0")
    total = float(sum(tokens_by_request.values()))
    if total == 0:
        return {IDLE: energy_j}
    return {rid: energy_j * tokens / total for rid, tokens in tokens_by_request.items()}


@dataclass(frozen=True)
class NodeAssumption:
    """Host power per accelerator (CPU, DRAM, NICs, fans, storage), W. An assumption, labelled."""

    host_w_per_device: float
    source: str


@dataclass(frozen=True)
class FacilityRatios:
    """Joules each stage beyond the boards adds per joule of board energy (devices + hosts).

    The facility twin supplies them (server fans and PSU losses inside IT, then power chain, cooling,
    auxiliaries); `from_pue` expresses a plain PUE assumption the same way, so the ledger has one
    mechanism for both."""

    stages: tuple[tuple[str, float], ...]
    provenance: str

    def __post_init__(self) -> None:
        if any(r < 0 for _, r in self.stages):
            raise ValueError(f"facility ratios must be >= 0, got {self.stages}")

    @classmethod
    def from_pue(cls, pue: float, source: str) -> FacilityRatios:
        if pue < 1.0:
            raise ValueError(f"PUE must be >= 1.0 (wall energy cannot be below IT energy), got {pue}")
        return cls((("facility", pue - 1.0),), f"assumed: PUE {pue:g} ({source})")


@dataclass(frozen=True)
class Stage:
    """One step of the waterfall: its joules and where the number came from."""

    name: str
    energy_j: float
    provenance: str


@dataclass(frozen=True)
class Waterfall:
    """Device -> node -> facility, each stage adding its own joules; `wall_j` is their sum."""

    stages: tuple[Stage, ...]

    @property
    def wall_j(self) -> float:
        return sum(s.energy_j for s in self.stages)

    @property
    def it_j(self) -> float:
        return sum(s.energy_j for s in self.stages if s.name in IT_STAGES)

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def rollup(
    device_j: float,
    device_provenance: str,
    duration_s: float,
    n_devices: int,
    node: NodeAssumption,
    facility: FacilityRatios,
) -> Waterfall:
    """Roll device joules up to the wall: host overhead for `n_devices` over `duration_s`, then each
    facility stage as its ratio x board energy (devices + hosts)."""
    host_j = node.host_w_per_device * n_devices * duration_s
    board_j = device_j + host_j
    stages = [
        Stage("device", device_j, device_provenance),
        Stage("host", host_j, f"assumed: {node.host_w_per_device:g} W per device ({node.source})"),
    ]
    stages += [Stage(name, ratio * board_j, facility.provenance) for name, ratio in facility.stages]
    return Waterfall(tuple(stages))
