"""Modelled KV offload tiers: what copying KV blocks back from CXL-attached memory or processing-in-memory
would cost, from the catalog's bandwidth and energy per bit. Neither exists on this machine, so every
number here is estimated; the blocks such a tier would have served are counted by the engine on the real
request sequence (`engine/kv_offload.ModelledTier`)."""

from __future__ import annotations

from dataclasses import dataclass

from joulepath.hw.catalog import get_memory

# Where the catalog publishes no energy per bit for a tier, the memory behind it stands in (an estimate).
ENERGY_STAND_IN = {
    "cxl-memory": ("ddr5", "DDR5's pJ/bit for the DRAM behind the CXL link; the link's own energy is unpublished"),
    "hbm-pim": ("hbm2", "HBM2's pJ/bit as an upper bound; no HBM-PIM figure is published"),
}
MODELLED_TIERS = tuple(ENERGY_STAND_IN)


@dataclass(frozen=True)
class TierEstimate:
    """One modelled tier: seconds and joules to move bytes through it (estimated)."""

    memory: str
    bandwidth_gb_s: float
    pj_per_bit: float
    provenance: str

    def seconds(self, n_bytes: float) -> float:
        return n_bytes / (self.bandwidth_gb_s * 1e9)

    def joules(self, n_bytes: float) -> float:
        return n_bytes * 8 * self.pj_per_bit * 1e-12


def modelled_tier(name: str) -> TierEstimate:
    """The catalog's numbers for a modelled KV tier (`cxl-memory`, `hbm-pim`)."""
    if name not in ENERGY_STAND_IN:
        raise ValueError(f"unknown modelled KV tier {name!r}; use one of {', '.join(MODELLED_TIERS)}")
    mem = get_memory(name)
    if mem.bandwidth_gb_s is None:
        raise ValueError(f"catalog memory {name!r} has no bandwidth; a modelled tier needs one")
    pj, why = mem.energy_pj_per_bit, f"estimated: {mem.bandwidth_gb_s:g} GB/s from the catalog ({mem.source})"
    if pj is None:
        stand_in, reason = ENERGY_STAND_IN[name]
        pj = get_memory(stand_in).energy_pj_per_bit or 0.0
        why += f"; energy {reason}"
    return TierEstimate(name, mem.bandwidth_gb_s, pj, why)
