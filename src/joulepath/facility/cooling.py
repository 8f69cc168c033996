"""Cooling: air (CRAH fans + chilled-water plant with economiser), direct-to-chip liquid with a CDU
(a share of heat to warm water, the rest to air), immersion, and free cooling by weather.

Physics, each with its source or labelled assumption:
- Chiller COP = carnot_fraction x T_evap / (T_cond - T_evap) (temperatures in K), T_cond following the
  wet bulb (water-cooled, tower) or the dry bulb (dry cooler); typical carnot_fraction 0.45-0.6
  (ASHRAE Handbook HVAC Systems; modern centrifugal chillers reach COP 6-7 at design).
- Water-side economiser: the tower (or dry cooler) carries the load alone when its leaving water is
  cold enough; partially inside a 3 K band above that.
- Fans: cube law on airflow (affinity laws) with VFDs; constant speed without.
- Tower water: evaporation = heat / latent heat (2.43 MJ/kg), plus blowdown at `cycles` of
  concentration.
- Server fans belong to the IT load: a share of air-cooled server power, mostly gone where cold plates
  or immersion take the heat (why PUE moves less than total power when liquid arrives).

Controlled operation (`Setpoints`, used by `facility.feedback` and the `control` package): the supply air,
chilled-water and facility-water temperatures, the economiser mode and the CRAH airflow become inputs per
step. Three more pieces of physics make them matter, each only on that path (`setpoints=None` reproduces
the fixed-rule twin exactly):
- Coil approach: a CRAH coil cannot make supply air colder than the chilled water plus its approach
  (6 K: the conventional 6.7 C water / 12.8 C air design, ASHRAE Handbook HVAC Systems ch. 23).
- Recirculation: air the CRAHs do not supply is drawn from the hot aisle; a share `leak` of the intake
  leaks through containment even when matched. Inlet = supply + share / (1 - share) x server delta T.
- Server fans speed up above a rack inlet of ~25 C and draw power as the cube of speed (affinity laws);
  ~+2 % server power at 27 C, the size ASHRAE TC9.9 (2011 thermal guidelines white paper, fig. on power
  vs inlet temperature) shows for volume servers.
- Cooling tower with a condenser-water setpoint (`Setpoints.tower_approach_k`, water-cooled plants; NaN keeps
  the fixed-rule tower: design approach at any load, fan power in proportion to heat). The tower's
  transfer coefficient goes as airflow^0.6 (tower characteristic KaV/L = C (L/G)^-n, n 0.4-0.8, typically
  0.6: ASHRAE Handbook HVAC Systems and Equipment, ch. 40; Braun et al. 1989), and its approach to the wet
  bulb is taken as proportional to heat / that coefficient (linearised; assumption: real approaches fall
  somewhat less than linearly with load). So the tower cannot make water colder than
  wet bulb + design approach x load fraction (fans at full speed); asked for warmer water it slows its
  fans, whose power goes as speed cubed (VFD, affinity laws), down to a 20 % minimum speed (assumption,
  typical VFD floor; the fans cycle below it). Full-speed fan power = `tower_fan_w_per_w` x design heat.
  The economiser, when it runs, takes the coldest water the tower makes; with the chiller alone, the
  condenser water is the setpoint (never below that floor). Chiller lift and COP follow the condenser
  water as before (`chiller_cop`), so a lower setpoint trades chiller power for tower-fan power. Left
  out: the approach also grows at a low wet bulb (air carries less enthalpy per K), the same for every
  controller.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LATENT_HEAT_J_PER_KG = 2.43e6
ASHRAE_INLET_MIN_C, ASHRAE_INLET_MAX_C = 18.0, 27.0  # ASHRAE TC9.9 recommended envelope
AIR_MAX_RACK_KW = 40.0  # practical air-cooling limit with containment (assumption; rear doors reach ~70)


@dataclass(frozen=True)
class CoolingConfig:
    """One cooling design. Fractions are of heat (W/W) unless named otherwise."""

    kind: str = "air"  # air | liquid | immersion
    liquid_fraction: float = 0.0  # heat captured by cold plates (liquid) or fluid (immersion)
    facility_water_supply_c: float = 32.0  # liquid loop class, e.g. W32 / W45 (ASHRAE TC9.9 liquid classes)
    liquid_to_dry_coolers: bool = True  # False: the liquid loop rides the existing chiller plant (retrofit)
    crah_sized_for_all_heat: bool = False  # retrofit: the air handlers stay as built for an all-air room
    chilled_water_supply_c: float = 12.0  # air path
    supply_air_c: float = 24.0
    carnot_fraction: float = 0.5
    water_cooled: bool = True  # cooling tower (evaporative) vs dry cooler for the chiller's condenser
    tower_approach_k: float = 4.0
    dry_cooler_approach_k: float = 6.0
    economiser: bool = True  # water-side economiser on the air path
    air_side_economiser: bool = False  # outside air straight to the room
    crah_fan_w_per_w: float = 0.04  # at design airflow
    fan_vfd: bool = True
    pump_w_per_w: float = 0.02  # chilled / condenser water pumps
    cdu_pump_w_per_w: float = 0.01  # liquid loop pumps (CDU + facility water)
    tower_fan_w_per_w: float = 0.008
    dry_cooler_fan_w_per_w: float = 0.02
    server_fan_frac_air: float = 0.10  # server fans as a share of air-cooled IT power
    server_fan_reduction_liquid: float = 0.95  # fan power removed on the liquid-captured share
    tower_cycles: float = 4.0
    capacity_margin: float = 0.2  # plant capacity above design heat
    # controlled operation only (see the module docstring); assumptions labelled, sources cited there
    coil_approach_k: float = 6.0  # supply air >= chilled water + this
    server_delta_t_k: float = 12.0  # air temperature rise across a server at its own airflow (10-15 K typical)
    containment_leak_frac: float = 0.05  # intake share from the hot aisle with matched airflow (assumption)
    server_fan_ramp_c: float = 25.0  # inlet above which server fans speed up (typical fan tables)
    server_fan_speed_per_k: float = 0.03  # fan speed rise per K above the ramp (-> ~+2 % server power at 27 C)
    tower_ua_airflow_exp: float = 0.6  # tower transfer coefficient ~ airflow^this (ASHRAE Handbook ch. 40)
    tower_fan_min_frac: float = 0.2  # lowest VFD fan speed before the fans cycle (assumption)
    source: str = "parameters documented in docs/facility.md"

    def __post_init__(self) -> None:
        if self.kind not in ("air", "liquid", "immersion"):
            raise ValueError(f"cooling kind must be air, liquid or immersion, got {self.kind!r}")
        if not 0.0 <= self.liquid_fraction <= 1.0:
            raise ValueError(f"liquid_fraction must be in [0, 1], got {self.liquid_fraction}")


@dataclass(frozen=True)
class Setpoints:
    """What a controller sets for a control interval; each a scalar or one value per step.

    `airflow_ratio_frac`: CRAH airflow over the airflow the servers draw (1.0 = matched, below 1 hot
    air recirculates). `economiser_flag`: 1 lets the water-side economiser run, 0 keeps it off.
    `tower_approach_k`: the condenser-water setpoint as K above the wet bulb (a wet-bulb reset; the tower
    makes it when it can, see the module docstring); NaN: the fixed-rule twin's tower."""

    supply_air_c: np.ndarray | float = 18.0
    chilled_water_c: np.ndarray | float = 12.0
    facility_water_c: np.ndarray | float = 32.0
    economiser_flag: np.ndarray | float = 1.0
    airflow_ratio_frac: np.ndarray | float = 1.0
    tower_approach_k: np.ndarray | float = float("nan")


@dataclass(frozen=True)
class CoolingResult:
    """Per-step cooling power by part (W), water use (L/s), inlet temperature and free-cooling share."""

    crah_fan_w: np.ndarray
    chiller_w: np.ndarray
    pump_w: np.ndarray
    heat_rejection_fan_w: np.ndarray
    water_l_per_s: np.ndarray  # tower make-up water
    inlet_c: np.ndarray
    free_cooling_frac: np.ndarray  # share of heat rejected without compressors

    @property
    def total_w(self) -> np.ndarray:
        result: np.ndarray = self.crah_fan_w + self.chiller_w + self.pump_w + self.heat_rejection_fan_w
        return result


def server_fan_frac(cfg: CoolingConfig) -> float:
    """Server fans as a share of the IT power without fans, for this design."""
    if cfg.kind == "immersion":
        return 0.0
    return cfg.server_fan_frac_air * (1.0 - cfg.liquid_fraction * cfg.server_fan_reduction_liquid)


def _clip(x: np.ndarray | float, lo: float, hi: float) -> np.ndarray:
    """np.clip without its wrapper overhead (the MPC calls the cooling model 35,040 times a year)."""
    result: np.ndarray = np.minimum(np.maximum(x, lo), hi)
    return result


def chiller_cop(t_evap_c: np.ndarray | float, t_cond_c: np.ndarray, carnot_fraction: float) -> np.ndarray:
    """Vapour-compression COP as a fraction of Carnot; lift floored at 5 K, COP capped at 15."""
    t_evap_k = np.asarray(t_evap_c) + 273.15
    lift = np.maximum(t_cond_c + 273.15 - t_evap_k, 5.0)
    cop: np.ndarray = np.minimum(carnot_fraction * t_evap_k / lift, 15.0)
    return cop


def _reject(
    heat_w: np.ndarray,
    supply_c: np.ndarray | float,
    t_sink_c: np.ndarray,
    approach_k: float,
    cfg: CoolingConfig,
    economiser: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray]:
    """(compressor W, free-cooled share) to make water at `supply_c` with a sink at `t_sink_c`;
    `economiser` (0 or 1, per step or one value) says whether the economiser may run."""
    margin = supply_c - (t_sink_c + approach_k)  # > 0: sink alone is cold enough
    free = _clip(margin / 3.0 + 1.0, 0.0, 1.0) * economiser  # linear over a 3 K band
    t_cond = t_sink_c + approach_k + 2.0  # condenser approach
    cop = chiller_cop(np.asarray(supply_c) - 2.0, t_cond, cfg.carnot_fraction)
    chiller: np.ndarray = heat_w * (1.0 - free) / cop
    return chiller, free


def tower_approach_k(cfg: CoolingConfig, load_frac: np.ndarray, airflow_frac: np.ndarray | float) -> np.ndarray:
    """Tower leaving water above the wet bulb (K) at `load_frac` of the design heat and `airflow_frac` of
    full fan airflow: design approach x load / airflow^0.6 (see the module docstring).

    >>> float(tower_approach_k(CoolingConfig(), np.array(0.5), 1.0))  # half load, fans at full speed
    2.0
    """
    result: np.ndarray = cfg.tower_approach_k * load_frac / np.asarray(airflow_frac) ** cfg.tower_ua_airflow_exp
    return result


def _reject_tower(
    mech_heat_w: np.ndarray,
    load_frac: np.ndarray,
    setpoint_k: np.ndarray,
    sp: Setpoints,
    t_wetbulb_c: np.ndarray,
    cfg: CoolingConfig,
    design_heat_w: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(compressor W, free-cooled share, tower fan W) of the air path with the condenser water asked at
    wet bulb + `setpoint_k`. The economiser runs on the coldest water the tower makes (fans at full speed;
    only as cold as the chilled water needs once it carries the whole load); the chiller alone gets the
    setpoint's water; either way no colder than full speed nor warmer than minimum speed makes it."""
    coldest_k = tower_approach_k(cfg, load_frac, 1.0)
    warmest_k = tower_approach_k(cfg, load_frac, cfg.tower_fan_min_frac)
    margin = sp.chilled_water_c - (t_wetbulb_c + coldest_k)
    free = _clip(margin / 3.0 + 1.0, 0.0, 1.0) * sp.economiser_flag  # linear over a 3 K band, as `_reject`
    # economiser running: chilled water - wet bulb (below `coldest_k` inside the band, so clipped to it)
    asked_k = np.where(free > 0, np.asarray(sp.chilled_water_c) - t_wetbulb_c, setpoint_k)
    approach_k = np.minimum(np.maximum(asked_k, coldest_k), warmest_k)
    t_cond = t_wetbulb_c + approach_k + 2.0  # condenser approach, as `_reject`
    cop = chiller_cop(np.asarray(sp.chilled_water_c) - 2.0, t_cond, cfg.carnot_fraction)
    chiller: np.ndarray = mech_heat_w * (1.0 - free) / cop
    # fan speed = (coldest / approach)^(1 / exponent); power goes as its cube
    speed_cubed = (coldest_k / np.maximum(approach_k, 1e-9)) ** (3.0 / cfg.tower_ua_airflow_exp)
    fan: np.ndarray = cfg.tower_fan_w_per_w * design_heat_w * speed_cubed
    return chiller, free, fan


def fixed_setpoints(cfg: CoolingConfig) -> Setpoints:
    """The design's own fixed setpoints (what the uncontrolled twin runs at)."""
    return Setpoints(
        cfg.supply_air_c, cfg.chilled_water_supply_c, cfg.facility_water_supply_c, float(cfg.economiser), 1.0
    )


def rack_inlet_c(cfg: CoolingConfig, sp: Setpoints) -> np.ndarray:
    """Server inlet temperature (C) under controlled setpoints: the supply air the coil can make, plus
    hot-aisle air recirculated where the CRAHs supply less than the servers draw (mixing balance: a share
    s of intake from the hot aisle warms it by s / (1 - s) x the server's delta T). The CRAH fans' 30 %
    floor, which can only oversupply a lightly loaded room, is left out: the estimate errs warm."""
    supply_c = np.maximum(sp.supply_air_c, np.asarray(sp.chilled_water_c) + cfg.coil_approach_k)
    share = _clip(1.0 - np.asarray(sp.airflow_ratio_frac), 0.0, 0.9) + cfg.containment_leak_frac
    inlet: np.ndarray = supply_c + share / (1.0 - share) * cfg.server_delta_t_k
    return inlet


def server_fan_factor(cfg: CoolingConfig, inlet_c: np.ndarray) -> np.ndarray:
    """Server fan power over its value at a cool inlet: fan speed ramps above `server_fan_ramp_c`, power
    goes as speed cubed (fan affinity laws)."""
    speed = 1.0 + cfg.server_fan_speed_per_k * np.maximum(np.asarray(inlet_c) - cfg.server_fan_ramp_c, 0.0)
    factor: np.ndarray = speed**3
    return factor


def run_cooling(
    cfg: CoolingConfig,
    heat_w: np.ndarray,
    design_heat_w: float,
    t_drybulb_c: np.ndarray,
    t_wetbulb_c: np.ndarray,
    setpoints: Setpoints | None = None,
) -> CoolingResult:
    """Cooling power and water for `heat_w` of heat in the white space; at the design's fixed setpoints,
    or at a controller's `setpoints` (coil approach, recirculation and airflow then count)."""
    sp = setpoints or fixed_setpoints(cfg)
    liquid_heat = heat_w * cfg.liquid_fraction
    air_heat = heat_w - liquid_heat
    air_design = max(design_heat_w * (1.0 if cfg.crah_sized_for_all_heat else 1.0 - cfg.liquid_fraction), 1e-9)
    capacity = design_heat_w * (1 + cfg.capacity_margin)
    overload = np.maximum(heat_w / capacity - 1.0, 0.0)
    inlet = np.full_like(heat_w, cfg.supply_air_c) if setpoints is None else rack_inlet_c(cfg, sp) + 0 * heat_w
    flow = _clip(sp.airflow_ratio_frac * air_heat / air_design, 0.3, 1.5) if cfg.fan_vfd else np.ones_like(heat_w)
    crah = cfg.crah_fan_w_per_w * air_design * flow**3 * (air_heat > 0)
    sink = t_wetbulb_c if cfg.water_cooled else t_drybulb_c
    approach = cfg.tower_approach_k if cfg.water_cooled else cfg.dry_cooler_approach_k
    air_mech_heat = air_heat
    if cfg.air_side_economiser:  # outside air when it is within the envelope
        supply_air_c = (
            cfg.supply_air_c
            if setpoints is None
            else np.maximum(sp.supply_air_c, np.asarray(sp.chilled_water_c) + cfg.coil_approach_k)
        )
        outside_ok = (t_drybulb_c >= ASHRAE_INLET_MIN_C - 8) & (t_drybulb_c <= supply_air_c - 1)
        air_mech_heat = air_heat * (1 - np.where(outside_ok, 1.0, 0.0))
        inlet = np.where(outside_ok, np.maximum(t_drybulb_c + 1.0, ASHRAE_INLET_MIN_C), inlet)
    # liquid loop: warm water, dry coolers first, evaporative trim, compressors only when both fall short
    fw_c = sp.facility_water_c
    dry_free: np.ndarray | float = 0.0
    chiller_liq: np.ndarray | float = 0.0
    wet_free: np.ndarray | float = 0.0
    if cfg.liquid_fraction > 0:  # (skipped without a liquid loop: the MPC calls this 35,040 times a year)
        if cfg.liquid_to_dry_coolers:
            dry_free = _clip((fw_c - (t_drybulb_c + cfg.dry_cooler_approach_k)) / 3.0 + 1, 0.0, 1.0) + 0 * heat_w
        # the liquid loop's evaporative trim keeps the design approach (its tower share is not controlled)
        chiller_liq, wet_free = _reject(liquid_heat * (1 - dry_free), fw_c, sink, approach, cfg, sp.economiser_flag)
    setpoint_k = np.asarray(sp.tower_approach_k)
    unset = np.isnan(setpoint_k)
    tower_reset = setpoints is not None and cfg.water_cooled and not unset.all()
    tower_fan = np.zeros_like(heat_w)
    if tower_reset:  # one tower for both paths; its load leaves out compressor heat (scales alike, assumption)
        if unset.any():  # a step without a setpoint: the design approach
            setpoint_k = np.where(unset, cfg.tower_approach_k, setpoint_k)
        load_frac = (air_mech_heat + liquid_heat * (1 - dry_free)) / max(design_heat_w, 1e-9)
        chiller_air, free_air, tower_fan = _reject_tower(
            air_mech_heat, load_frac, setpoint_k, sp, sink, cfg, design_heat_w
        )
    else:
        chiller_air, free_air = _reject(air_mech_heat, sp.chilled_water_c, sink, approach, cfg, sp.economiser_flag)
    inlet = inlet + 10.0 * overload  # an overloaded plant lets the room warm (coarse, labelled estimate)
    tower_heat = (air_mech_heat + chiller_air) * cfg.water_cooled + liquid_heat * (1 - dry_free)
    dry_heat = liquid_heat * dry_free + (air_mech_heat + chiller_air) * (not cfg.water_cooled)
    pumps = cfg.pump_w_per_w * air_mech_heat + cfg.cdu_pump_w_per_w * liquid_heat
    tower_fans = tower_fan if tower_reset else cfg.tower_fan_w_per_w * tower_heat
    rejection_fans = tower_fans + cfg.dry_cooler_fan_w_per_w * dry_heat
    evaporated_kg = tower_heat / LATENT_HEAT_J_PER_KG  # per second of operation
    water_l_per_s = evaporated_kg * (1 + 1 / (cfg.tower_cycles - 1))  # plus blowdown; 1 kg ~ 1 L
    mech_share = (chiller_air > 0) * air_mech_heat * (1 - free_air) + liquid_heat * (1 - dry_free) * (1 - wet_free)
    free_frac = 1.0 - mech_share / np.maximum(heat_w, 1e-9)
    return CoolingResult(crah, chiller_air + chiller_liq, pumps, rejection_fans, water_l_per_s, inlet, free_frac)


def rack_warning(cfg: CoolingConfig, rack_kw: float) -> str | None:
    """A warning when air is asked to carry racks denser than it can."""
    air_kw = rack_kw * (1 - cfg.liquid_fraction)
    if cfg.kind == "air" and rack_kw > AIR_MAX_RACK_KW:
        return (
            f"{rack_kw:.0f} kW racks exceed what air cooling carries (~{AIR_MAX_RACK_KW:.0f} kW/rack with "
            "containment); an NVL72-class rack needs direct-to-chip liquid or immersion"
        )
    if cfg.kind == "liquid" and air_kw > AIR_MAX_RACK_KW:
        return f"the air share of each rack ({air_kw:.0f} kW) exceeds ~{AIR_MAX_RACK_KW:.0f} kW; raise liquid_fraction"
    return None
