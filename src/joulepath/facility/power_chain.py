"""Power chain: stage-by-stage conversion losses from the grid connection to the servers' boards.

Each stage: P_in = (P_out + L0) / eta(P_out / rating), eta interpolated on a published-shape curve,
L0 a fixed (no-load) loss. Topologies list stages from the grid to the load; `run` walks them from the
load back to the grid. The last stage (server PSU or rack DC-DC) is inside the IT load, as PUE counts it:
IT power is what enters the servers, losses before that are the facility's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Stage:
    """One conversion stage. `eta_curve`: (load fraction of rating, efficiency) points."""

    name: str
    eta_curve: tuple[tuple[float, float], ...]
    source: str
    loading_at_design: float = 0.5  # design load / rating (2N UPS: 0.5; PSU pairs: 0.5)
    no_load_loss_frac: float = 0.0  # of rating
    inside_it: bool = False

    def input_w(self, out_w: np.ndarray, design_out_w: float) -> np.ndarray:
        rating_w = design_out_w / self.loading_at_design
        loads, etas = zip(*self.eta_curve, strict=True)
        eta = np.interp(out_w / rating_w, loads, etas)
        result: np.ndarray = (out_w + self.no_load_loss_frac * rating_w) / eta
        return result


TRANSFORMER_MV = Stage(
    "mv-transformer",
    ((0.1, 0.975), (0.25, 0.988), (0.5, 0.991), (0.75, 0.990), (1.0, 0.988)),
    "US DOE 2016 efficiency standard, medium-voltage dry-type (about 99 % at 50 % load); part-load shape typical",
    loading_at_design=0.6,
)
UPS_DOUBLE_CONVERSION = Stage(
    "ups-double-conversion",
    ((0.1, 0.86), (0.25, 0.93), (0.5, 0.955), (0.75, 0.96), (1.0, 0.96)),
    "typical modern double-conversion UPS curve (Schneider Electric White Paper 108 shape)",
)
UPS_LEGACY = Stage(
    "ups-legacy",
    ((0.1, 0.80), (0.25, 0.88), (0.5, 0.92), (0.75, 0.93), (1.0, 0.93)),
    "older double-conversion UPS (Schneider Electric White Paper 108, legacy units), at 2N low load",
    loading_at_design=0.35,
)
UPS_ECO = Stage(
    "ups-eco-mode",
    ((0.1, 0.97), (0.25, 0.985), (0.5, 0.99), (1.0, 0.99)),
    "line-interactive / eco-mode UPS or distributed batteries (~99 %), as hyperscalers deploy",
)
PDU = Stage("pdu", ((0.0, 0.995), (1.0, 0.995)), "PDU and branch cabling, ~0.5 % loss (assumption)")
PSU_TITANIUM = Stage(
    "server-psu-80plus-titanium",
    ((0.1, 0.90), (0.2, 0.94), (0.5, 0.96), (1.0, 0.91)),
    "80 PLUS Titanium, 230 V internal redundant: 90/94/96/91 % at 10/20/50/100 % load",
    inside_it=True,
)
RECTIFIER_800VDC = Stage(
    "mv-to-800vdc-rectifier",
    ((0.1, 0.97), (0.25, 0.978), (0.5, 0.98), (1.0, 0.979)),
    "solid-state transformer / rectifier MV -> 800 VDC, ~98 % (vendor claims 97.5-98.5 %; not published for the "
    "NVIDIA 800 VDC architecture, 2025); estimate",
    loading_at_design=0.6,
)
DC_BUSWAY = Stage("dc-busway", ((0.0, 0.997), (1.0, 0.997)), "800 VDC busway, ~0.3 % conduction loss (assumption)")
RACK_DCDC_800_54 = Stage(
    "rack-dcdc-800v-54v",
    ((0.1, 0.945), (0.2, 0.965), (0.5, 0.975), (1.0, 0.97)),
    "in-rack 800 VDC -> 54 VDC converter, ~97.5 % peak (vendor claims 97-98 %); replaces the AC PSU (estimate)",
    inside_it=True,
)
RECTIFIER_380VDC = Stage(
    "380vdc-rectifier",
    ((0.1, 0.92), (0.25, 0.95), (0.5, 0.965), (1.0, 0.965)),
    "380 VDC rectifier plant (LBNL DC power demonstration, 2008); estimate",
)
PSU_DC_INPUT = Stage(
    "server-psu-380vdc",
    ((0.1, 0.91), (0.2, 0.945), (0.5, 0.96), (1.0, 0.945)),
    "380 VDC-input server PSU (no PFC stage), about 0.5 point above AC Titanium (estimate)",
    inside_it=True,
)

TOPOLOGIES: dict[str, tuple[Stage, ...]] = {
    "ac-415v": (TRANSFORMER_MV, UPS_DOUBLE_CONVERSION, PDU, PSU_TITANIUM),
    "ac-415v-legacy": (TRANSFORMER_MV, UPS_LEGACY, PDU, PSU_TITANIUM),
    "ac-415v-eco": (TRANSFORMER_MV, UPS_ECO, PDU, PSU_TITANIUM),
    "hvdc-800v": (RECTIFIER_800VDC, DC_BUSWAY, RACK_DCDC_800_54),
    "dc-380v": (TRANSFORMER_MV, RECTIFIER_380VDC, PDU, PSU_DC_INPUT),
}


@dataclass(frozen=True)
class ChainResult:
    """Power at each point of the chain, W (arrays over time)."""

    it_power_w: np.ndarray  # entering the servers (PUE's IT power)
    grid_side_w: np.ndarray  # entering the first stage
    facility_loss_w: np.ndarray  # losses of stages outside the IT load
    it_conversion_loss_w: np.ndarray  # PSU / rack DC-DC losses (inside IT)
    stage_loss_w: dict[str, np.ndarray]


def run_chain(topology: str, board_w: np.ndarray, design_board_w: float) -> ChainResult:
    """Walk `topology` from the boards (DC power the hardware draws) back to the grid."""
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown power topology {topology!r}; known: {', '.join(TOPOLOGIES)}")
    out, design = board_w, design_board_w
    losses: dict[str, np.ndarray] = {}
    it_power = board_w
    for stage in reversed(TOPOLOGIES[topology]):
        p_in = stage.input_w(out, design)
        losses[stage.name] = p_in - out
        design = float(stage.input_w(np.array([design]), design)[0])
        out = p_in
        if stage.inside_it:
            it_power = p_in
    inside = sum((losses[s.name] for s in TOPOLOGIES[topology] if s.inside_it), np.zeros_like(board_w))
    return ChainResult(it_power, out, out - it_power, inside, losses)
