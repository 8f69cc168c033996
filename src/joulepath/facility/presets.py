"""Named facility designs. Every parameter that is not a default of `CoolingConfig` is explained in
docs/facility.md; the validation ones say which numbers were set to reproduce a published study."""

from __future__ import annotations

import dataclasses

from joulepath.facility.cooling import CoolingConfig
from joulepath.facility.twin import FacilityConfig

MODERN_AIR = FacilityConfig(name="modern-air")  # chilled water 12 C, VFD fans, water-side economiser, 2N UPS

ENTERPRISE_AIR = FacilityConfig(
    name="enterprise-air",
    topology="ac-415v-legacy",  # older double-conversion UPS at 2N, 35 % loaded
    aux_frac=0.035,  # lighting, offices, UPS-room HVAC, humidification
    climate="temperate",
    cooling=CoolingConfig(
        kind="air",
        chilled_water_supply_c=7.0,  # legacy set point
        supply_air_c=20.0,  # cold rooms, no containment
        carnot_fraction=0.35,  # older air-cooled screw chillers
        water_cooled=False,
        economiser=False,
        crah_fan_w_per_w=0.12,  # constant-speed CRAC fans, oversupplied
        fan_vfd=False,
        pump_w_per_w=0.035,
    ),
)

HYPERSCALE_LIQUID = FacilityConfig(
    name="hyperscale-liquid",
    topology="ac-415v-eco",  # no double conversion: eco-mode / distributed batteries (~99 %)
    aux_frac=0.02,
    climate="mild",
    cooling=CoolingConfig(
        kind="liquid",
        liquid_fraction=0.7,  # cold plates on accelerators and CPUs
        facility_water_supply_c=32.0,  # W32: dry coolers most of the year in a mild climate
        chilled_water_supply_c=18.0,
        supply_air_c=26.0,  # hot/cold aisle containment, upper half of the ASHRAE envelope
        carnot_fraction=0.5,
        crah_fan_w_per_w=0.03,
        pump_w_per_w=0.03,
        cdu_pump_w_per_w=0.015,
    ),
)

IMMERSION = FacilityConfig(
    name="immersion",
    topology="ac-415v",
    cooling=CoolingConfig(kind="immersion", liquid_fraction=1.0, facility_water_supply_c=40.0, cdu_pump_w_per_w=0.02),
)

# NVIDIA / Vertiv study (Vertiv white paper, 2023): an air-cooled site retrofitted to 75 % direct-to-chip.
# Set to reproduce it: server fans 11 % of air-cooled IT power; the liquid loop rides the existing chiller
# plant at 13 C facility water; the air handlers stay as built (constant speed).
VALIDATION_AIR = FacilityConfig(
    name="study-air",
    climate="temperate",
    aux_frac=0.02,
    cooling=CoolingConfig(
        kind="air",
        chilled_water_supply_c=7.0,
        carnot_fraction=0.40,
        crah_fan_w_per_w=0.07,
        fan_vfd=False,
        economiser=False,
        server_fan_frac_air=0.11,
        pump_w_per_w=0.03,
    ),
)
VALIDATION_D2C_75 = VALIDATION_AIR.replace(
    name="study-d2c-75",
    cooling=dataclasses.replace(
        VALIDATION_AIR.cooling,
        kind="liquid",
        liquid_fraction=0.75,
        liquid_to_dry_coolers=False,
        facility_water_supply_c=13.0,
        crah_sized_for_all_heat=True,
    ),
)

PRESETS: dict[str, FacilityConfig] = {
    c.name: c for c in (MODERN_AIR, ENTERPRISE_AIR, HYPERSCALE_LIQUID, IMMERSION, VALIDATION_AIR, VALIDATION_D2C_75)
}


def get_preset(name: str) -> FacilityConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown facility preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]
