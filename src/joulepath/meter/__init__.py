"""Energy measurement (windows over NVML / RAPL / estimate / replay backends) and the energy ledger."""

from joulepath.meter.backends import CpuEstimateBackend, NvmlBackend, RaplBackend, ReplayBackend, select_backends
from joulepath.meter.base import (
    TIME_PROVENANCE,
    EnergyBackend,
    Measurement,
    Meter,
    MeterError,
    provenance_kind,
    weakest_kind,
)
from joulepath.meter.ledger import IDLE, FacilityRatios, NodeAssumption, Stage, Waterfall, attribute, rollup


def auto_meter() -> Meter:
    """A Meter over every backend this machine supports; `meter.notes` says what was chosen and why."""
    backends, notes = select_backends()
    return Meter(backends, notes)


__all__ = [
    "IDLE",
    "TIME_PROVENANCE",
    "CpuEstimateBackend",
    "EnergyBackend",
    "FacilityRatios",
    "Measurement",
    "Meter",
    "MeterError",
    "NodeAssumption",
    "NvmlBackend",
    "RaplBackend",
    "ReplayBackend",
    "Stage",
    "Waterfall",
    "attribute",
    "auto_meter",
    "provenance_kind",
    "rollup",
    "select_backends",
    "weakest_kind",
]
