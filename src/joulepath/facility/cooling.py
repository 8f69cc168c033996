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
chilled-water and facility-water temperatures, the economiser mode, the CRAH airflow, the condenser water
and the pumps' delta T and DP reset become inputs per step. More physics makes them matter, each only on
that path (`setpoints=None` reproduces the fixed-rule twin exactly):
- Coil approach: a CRAH coil cannot make supply air colder than the chilled water plus its approach
  (6 K at the design water flow: the conventional 6.7 C water / 12.8 C air design, ASHRAE Handbook HVAC
  Systems ch. 23; it grows as the water flow falls, last item).
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
- Variable-flow pumping (`Setpoints.chw_delta_t_k`; NaN keeps the fixed-rule pumps, a W per W of heat).
  The chilled-water flow the coils need is heat / (rho cp x loop delta T); pump power follows the affinity
  laws (flow ~ speed, head ~ speed^2, power ~ speed^3; ASHRAE Handbook HVAC Systems and Equipment ch. 44)
  on a system curve whose head is friction (~ flow^2) plus the differential-pressure (DP) setpoint held at
  the remote coil: reset with the valves (`pump_dp_reset_flag` 1, ASHRAE Guideline 36 and 90.1-2013
  6.5.4.2: DP reset until one valve is nearly wide open) the head falls as flow^2 and power as flow^3; a
  fixed DP setpoint (flag 0) keeps `pump_fixed_dp_frac` of the design head, set at 0.46 so that the plant
  just meets ASHRAE 90.1's variable-flow rule (6.5.4.2: no more than 30 % of design pump power at 50 % of
  design flow); the reset only lowers the setpoint, so above design flow both draw the same. The pumps
  never deliver less than `pump_min_speed_frac` of design flow (30 %: a minimum-flow bypass, the motor's
  cooling need; a fixed-DP pump's speed stays higher than that, the power law above accounts for it); flow
  the coils do not need bypasses. Design flow:
  90.1 Appendix G's 12 F (6.7 K) chilled-water delta T; `chw_pump_share` = 0.44 of `pump_w_per_w` is the
  chilled-water pumps (90.1 App. G: 22 W/gpm at 2.0 gpm/ton vs condenser water 19 W/gpm at ~3 gpm/ton), the
  rest condenser-water pumps, staged with the chillers (a W per W of heat, as before). The CDU / facility
  water pumps of a liquid loop run at the flow its heat needs at the loop's design delta T (the same law).
- The coil's approach depends on its water flow: a counterflow coil (epsilon-NTU, Incropera ch. 11) with
  the NTU that gives the 6 K approach at the design delta T and matched airflow; less water (a wider delta
  T) raises the water's capacity ratio and the water-side resistance (~ velocity^-0.8, Dittus-Boelter;
  `coil_water_resistance_frac` of the coil's resistance at design: assumption, air-side dominated), so the
  coil needs colder water for the same supply air. A wider delta T thus trades pump power for chiller lift
  (Taylor, "Optimizing design & control of chilled water plants", ASHRAE Journal 2011-2012). Left out:
  the coil's NTU also rises as its airflow falls (errs warm; only the MPC runs airflow below matched, so
  this errs against it),
  and a series economiser pre-cools warmer return water (a wider delta T would gain free cooling: errs
  against a wide delta T).
- Variable condenser-water flow (`Setpoints.cw_flow_frac`, water-cooled plants with a condenser-water
  setpoint; 1.0, the default, is the design flow every step and reproduces the model above exactly). The
  condenser pumps run at `cw_flow_frac` of design flow per running pump (still staged with the heat, so a
  running condenser carries its design heat: the range is `cw_range_design_k` / flow, 10 F = 5.6 K at
  3 gpm/ton, the AHRI 550/590 rating and ASHRAE 90.1 App. G basis). Three consequences, each at the same
  heat and relative to design flow, so that design flow keeps the calibrated `chiller_cop` above:
  (1) Condensing temperature: the refrigerant condenses at a constant temperature, so T_cond - T_in =
  range / epsilon with epsilon = 1 - exp(-NTU) (Incropera ch. 11, Cr = 0); NTU = UA / (m cp), the
  water-side film ~ velocity^0.8 (Dittus-Boelter) taking `cond_water_resistance_frac` of the resistance
  (assumption), design epsilon from a `cond_leaving_approach_k` (2 F) leaving-water approach. Less flow
  raises T_cond by range_d x (1 / (f epsilon(f)) - 1 / epsilon(1)): +1.3 K at 80 %, +3.6 K at 60 % flow.
  (2) Tower: less water at the same airflow and heat makes colder water (a longer range but a higher
  air-to-water ratio). Counterflow epsilon-NTU on enthalpy (Braun, Klein & Mitchell 1989), a design
  water-to-air capacity ratio m* = `tower_water_air_ratio` (L/G ~ 1.2 with the saturated-air enthalpy
  slope ~ 4.8 kJ/kg K near 27 C: assumption) and KaV ~ L^(1 - n) G^n (from KaV / L = C (L/G)^-n, ASHRAE
  Handbook ch. 40): the tower's approach is multiplied by `tower_flow_approach_factor` (0.82 at 60 % flow),
  worked out at design airflow and applied at every fan speed (assumption).
  (3) Pumps: flow x head, the head a static share `cw_static_head_frac` (open tower: basin-to-nozzle lift
  plus nozzle pressure, assumption 25 %) plus friction ~ flow^2 (affinity laws, ASHRAE Handbook HVAC
  Systems and Equipment ch. 44), floored at `pump_min_speed_frac`. The flow is never set below
  `cw_min_flow_frac` (the chiller maker's minimum tube velocity, ~3 ft/s: typically 50-60 % of design; a
  tower's nozzles and fill need a similar minimum).
  (4) Economiser: the plate exchanger between tower and chilled water (counterflow epsilon-NTU; chilled
  water 2 gpm/ton vs condenser water 3 gpm/ton, 90.1 App. G; a 2 F design approach, `econ_hx_approach_k`;
  the condenser-water film as in the condenser) needs colder tower water as its condenser-water flow
  falls: `economiser_hx_rise_k` x load (1.8 K at 60 %, 0.6 K at 80 % flow, design load), which moves the
  economiser's band (the existing model's exchanger needs no approach at design flow; this is the rise
  over it). Worked out at the design chilled-water delta T (assumption; the pump action's wider delta T
  makes the chilled water's capacity smaller, which this leaves out).
  Taylor (ASHRAE Journal 2011-2012, "Optimizing design & control of chilled water plants", parts 3 and 5)
  finds variable condenser flow rarely pays for centrifugal chillers: the lift penalty eats the pump savings.
  The fixed-rule twin and the baselines keep design flow (constant-speed condenser pumps are usual, and
  ASHRAE Guideline 36 does not reset condenser-water flow for a standard plant).
- Cold plates and the CDU's flow (`Setpoints.cdu_flow_frac`, kind "liquid" only; 1.0, the default, is the
  model above exactly: the CDU's secondary (technology cooling system) loop at its design delta T). The
  chip the twin watches is an accelerator at `chip_power_w` (700 W: H100 SXM TDP, NVIDIA H100 datasheet) x
  the step's liquid load (every chip loaded alike, and every plate's flow in proportion to its heat at
  design: assumptions). Its case temperature (`chip_case_c`) =
  secondary supply + half the plate's coolant rise (the mean along the plate) + q x (R_cond + R_conv(flow)):
  secondary supply = facility water + `cdu_approach_k` (the CDU's plate exchanger, 3 K: assumption, vendor
  CDUs quote 2-5 K); the plate's rise = the loop delta T = `cdu_delta_t_design_k` x load / flow, the design
  10 K being the ~1.5 L/min per kW of secondary flow that NVIDIA / OCP liquid-cooling guidance quotes
  (water: 1 kW / (0.025 kg/s x 4.19 kJ/kg K) = 9.6 K); R_cond + R_conv(1) = `cold_plate_r_k_per_w` less
  the half rise per W (the published figure is case to coolant inlet: 0.02-0.03 K/W for H100 / GB200-class
  plates, e.g. the < 0.03 K/W a GB200 plate is designed to), of which `cold_plate_conv_frac` is convective
  and goes as flow^-`cold_plate_flow_exp`; the rest (TIM, base) does not scale. GPU plates are microchannel
  plates whose flow is laminar (Re ~ 100-1,000): Nu in developing laminar flow goes as Re^(1/3)
  (Sieder-Tate 1936, Leveque), fully developed laminar flow not at all, turbulent flow as Re^0.8
  (Dittus-Boelter); 0.5 is taken (assumption, between developing laminar and turbulent; measured plate curves
  fall about as fast). The case limit `chip_case_max_c` (85 C) is an assumption of the order of the
  H100's published maximum operating temperature (nvidia-smi reports ~85-87 C for the GPU; the case runs
  cooler than the die, so this errs safe). At design flow and W32 water: 32 + 3 + 17.5 = 52.5 C at full load.
  Less flow (a wider delta T): the secondary pumps (`cdu_secondary_pump_share` of `cdu_pump_w_per_w`, the
  rest facility-water pumps that keep their own delta T: assumption) run at `cdu_flow_frac` of the flow the
  heat needs at design, by the same affinity law (`pump_power_frac`; a closed loop: no static lift) and
  never below `cdu_min_flow_frac` of design flow (the CDU's turndown, here the pumps' VFD floor); the chip
  warms (a longer rise, less convection). The return to the CDU is hotter, but the facility water is held
  at its setpoint on the other side of the exchanger and the dry coolers see only that supply temperature
  (`_reject`, a fixed approach to the dry bulb), so no free-cooling gain is modelled (a hotter facility-water
  return would give the dry coolers a larger mean temperature difference: errs against the lever). Left
  out: the CDU exchanger's approach narrows a little as the secondary flow falls (errs against the lever);
  chips hotter than the loop's mean load (the MPC's margin covers them). Acts only with a `chw_delta_t_k`
  (the variable-flow pumps), as `cw_flow_frac` acts only with a tower setpoint.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

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
    chw_delta_t_design_k: float = 6.7  # chilled-water delta T at design flow (12 F: ASHRAE 90.1 Appendix G)
    chw_pump_share: float = 0.44  # chilled-water share of `pump_w_per_w` (90.1 App. G W/gpm and gpm/ton)
    pump_min_speed_frac: float = 0.3  # VFD minimum speed (typical 30-40 %)
    pump_fixed_dp_frac: float = 0.46  # head kept by a fixed DP setpoint (just meets 90.1 6.5.4.2's 30 % at 50 %)
    coil_water_resistance_frac: float = 0.3  # water side's share of the coil's heat-transfer resistance (assumption)
    cw_range_design_k: float = 5.6  # condenser-water range at design flow and heat (10 F at 3 gpm/ton, AHRI 550/590)
    cond_leaving_approach_k: float = 1.1  # condensing minus leaving condenser water at design (2 F; typical 1-3 F)
    cond_water_resistance_frac: float = 0.5  # water side's share of the condenser's resistance (assumption)
    tower_water_air_ratio: float = 1.0  # tower m* = L cp_w / (G c_s) at design (Braun 1989; assumption)
    cw_static_head_frac: float = 0.25  # open-tower static lift + nozzle share of condenser pump head (assumption)
    cw_min_flow_frac: float = 0.6  # lowest condenser flow the chiller allows (~3 ft/s tube velocity; 50-60 %)
    econ_hx_approach_k: float = 1.1  # economiser plate exchanger: chilled water out - tower water in (2 F)
    econ_hx_chw_capacity_frac: float = 2.0 / 3.0  # chilled- over condenser-water flow (2 vs 3 gpm/ton, App. G)
    # cold plates and the CDU's secondary loop (kind "liquid"; module docstring: sources and assumptions)
    cdu_delta_t_design_k: float = 10.0  # secondary loop delta T at design flow (~1.5 L/min per kW)
    cdu_approach_k: float = 3.0  # secondary supply - facility water supply (CDU exchanger; assumption, 2-5 K)
    cdu_secondary_pump_share: float = 0.5  # CDU (secondary) share of `cdu_pump_w_per_w` (assumption)
    cdu_min_flow_frac: float = 0.3  # CDU turndown: the least secondary flow, of design (= the pumps' VFD floor)
    chip_power_w: float = 700.0  # accelerator power per cold plate at design load (H100 SXM TDP)
    cold_plate_r_k_per_w: float = 0.025  # case to coolant inlet at design flow (0.02-0.03 K/W published)
    cold_plate_conv_frac: float = 0.55  # convective share of the case-to-mean-coolant resistance (assumption)
    cold_plate_flow_exp: float = 0.5  # convective resistance ~ flow^-this (laminar microchannels; assumption)
    chip_case_max_c: float = 85.0  # accelerator case limit (assumption, H100 SXM-class)
    source: str = "parameters documented in docs/facility.md"

    def __post_init__(self) -> None:
        if self.kind not in ("air", "liquid", "immersion"):
            raise ValueError(f"cooling kind must be air, liquid or immersion, got {self.kind!r}")
        if not 0.0 <= self.liquid_fraction <= 1.0:
            raise ValueError(f"liquid_fraction must be in [0, 1], got {self.liquid_fraction}")
        if not 0.0 < self.cdu_min_flow_frac <= 1.0:
            raise ValueError(f"cdu_min_flow_frac must be in (0, 1], got {self.cdu_min_flow_frac}")
        if self.cold_plate_r_k_per_w <= self.cdu_delta_t_design_k / (2.0 * self.chip_power_w):
            raise ValueError("cold_plate_r_k_per_w (case to inlet) must exceed half the plate's rise per W")


@dataclass(frozen=True)
class Setpoints:
    """What a controller sets for a control interval; each a scalar or one value per step.

    `airflow_ratio_frac`: CRAH airflow over the airflow the servers draw (1.0 = matched, below 1 hot
    air recirculates). `economiser_flag`: 1 lets the water-side economiser run, 0 keeps it off.
    `tower_approach_k`: the condenser-water setpoint as K above the wet bulb (a wet-bulb reset; the tower
    makes it when it can, see the module docstring); NaN: the fixed-rule twin's tower.
    `chw_delta_t_k`: the chilled-water loop delta T the pump speed holds (K; the flow the coils then need
    sets the pump power, and a wider one needs colder water for the same supply air); NaN: the fixed-rule
    twin's pumps. `pump_dp_reset_flag`: 1 resets the pumps' DP setpoint with the valves (G36), 0 holds it.
    `cw_flow_frac`: condenser-water flow per running pump over design (1.0 = design; acts only with a
    `tower_approach_k`, and only while the economiser is off; clipped to `cw_min_flow_frac`).
    `cdu_flow_frac`: the CDU's secondary flow over the flow the liquid heat needs at the loop's design delta
    T (1.0 = design, NaN too; 0.5 doubles the loop delta T; never below `cdu_min_flow_frac` of design flow;
    cold plates only, and only with a `chw_delta_t_k`)."""

    supply_air_c: np.ndarray | float = 18.0
    chilled_water_c: np.ndarray | float = 12.0
    facility_water_c: np.ndarray | float = 32.0
    economiser_flag: np.ndarray | float = 1.0
    airflow_ratio_frac: np.ndarray | float = 1.0
    tower_approach_k: np.ndarray | float = float("nan")
    chw_delta_t_k: np.ndarray | float = float("nan")
    pump_dp_reset_flag: np.ndarray | float = 1.0
    cw_flow_frac: np.ndarray | float = 1.0
    cdu_flow_frac: np.ndarray | float = 1.0


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
    chip_case_c: np.ndarray | None = None  # accelerator case temperature (C); None without cold plates
    cdu_pump_w: np.ndarray | None = None  # CDU + facility-water pumps, part of `pump_w`; None without a liquid loop

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


def _counterflow_effectiveness(ntu: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """Counterflow heat-exchanger effectiveness at `ntu` and capacity ratio `cr` = Cmin / Cmax (Incropera
    ch. 11; cr = 1: NTU / (1 + NTU))."""
    balanced = np.abs(1.0 - cr) < 1e-9
    e = np.exp(-ntu * (1.0 - np.where(balanced, 0.0, cr)))
    result: np.ndarray = np.where(balanced, ntu / (1.0 + ntu), (1.0 - e) / (1.0 - np.where(balanced, 0.0, cr) * e))
    return result


def tower_flow_approach_factor(cfg: CoolingConfig, cw_flow_frac: np.ndarray | float) -> np.ndarray:
    """The tower's approach at `cw_flow_frac` of design water flow over its approach at design flow, at the
    same heat and design airflow: counterflow epsilon-NTU on enthalpy with KaV ~ L^(1 - n) (module
    docstring). Below 1: less water leaves colder.

    >>> [round(float(tower_flow_approach_factor(CoolingConfig(), f)), 2) for f in (0.6, 0.8, 1.0)]
    [0.82, 0.93, 1.0]
    """
    m, n = cfg.tower_water_air_ratio, cfg.tower_ua_airflow_exp  # air capacity rate = 1 at design airflow
    range_k, approach_k = cfg.cw_range_design_k, cfg.tower_approach_k
    heat = m * range_k  # design heat per unit of the air's capacity rate
    cmin_d, cr_d = min(m, 1.0), min(m, 1.0) / max(m, 1.0)
    eff_d = heat / (cmin_d * (approach_k + range_k))
    ntu_d = eff_d / (1 - eff_d) if cr_d > 1 - 1e-9 else math.log((1 - eff_d * cr_d) / (1 - eff_d)) / (1 - cr_d)
    f = np.asarray(cw_flow_frac, dtype=float)
    c_w = m * f
    cmin = np.minimum(c_w, 1.0)
    eff = _counterflow_effectiveness(ntu_d * cmin_d * f ** (1.0 - n) / cmin, cmin / np.maximum(c_w, 1.0))
    approach = heat / (eff * cmin) - heat / c_w  # entering water above the wet bulb, less the range
    result: np.ndarray = np.where(f >= 1.0, 1.0, approach / approach_k)
    return result


def condenser_lift_rise_k(cfg: CoolingConfig, cw_flow_frac: np.ndarray | float) -> np.ndarray:
    """How much the condensing temperature rises (K) at `cw_flow_frac` of design condenser flow, the
    condenser carrying its design heat: range_d x (1 / (f epsilon(f)) - 1 / epsilon(1)) (module docstring).

    >>> [round(float(condenser_lift_rise_k(CoolingConfig(), f)), 2) for f in (0.6, 0.8, 1.0)]
    [3.56, 1.33, 0.0]
    """
    range_k, r_w = cfg.cw_range_design_k, cfg.cond_water_resistance_frac
    eff_d = range_k / (range_k + cfg.cond_leaving_approach_k)
    f = np.asarray(cw_flow_frac, dtype=float)
    # NTU = UA / (m cp): UA falls with the water film (~ velocity^0.8), m cp with the flow
    ntu = -math.log(1.0 - eff_d) / (f * (1.0 - r_w) + r_w * f**0.2)
    rise = range_k * (1.0 / (f * (1.0 - np.exp(-ntu))) - 1.0 / eff_d)
    result: np.ndarray = np.where(f >= 1.0, 0.0, rise)
    return result


def economiser_hx_rise_k(cfg: CoolingConfig, cw_flow_frac: np.ndarray | float) -> np.ndarray:
    """How much colder (K) the tower water must enter the economiser's heat exchanger, at design load, for
    the same chilled water at `cw_flow_frac` of design condenser flow: counterflow epsilon-NTU, chilled
    water at its design delta T (module docstring). Scales with the load (a linear exchanger).

    >>> [round(float(economiser_hx_rise_k(CoolingConfig(), f)), 2) for f in (0.6, 0.8, 1.0)]
    [1.81, 0.6, 0.0]
    """
    c_chw, dt_k = cfg.econ_hx_chw_capacity_frac, cfg.chw_delta_t_design_k  # capacities per design condenser water
    heat = c_chw * dt_k
    eff_d = dt_k / (dt_k + cfg.econ_hx_approach_k)  # the chilled water is the smaller capacity at design
    ntu_d = math.log((1 - eff_d * c_chw) / (1 - eff_d)) / (1 - c_chw)
    f = np.asarray(cw_flow_frac, dtype=float)
    r_w = cfg.cond_water_resistance_frac  # the condenser-water film's share, as in the condenser
    ua = ntu_d * c_chw / (1.0 - r_w + r_w * f**-0.8)
    cmin, cmax = np.minimum(f, c_chw), np.maximum(f, c_chw)
    span_k = heat / (_counterflow_effectiveness(ua / cmin, cmin / cmax) * cmin)  # chilled water in - tower water in
    result: np.ndarray = np.where(f >= 1.0, 0.0, span_k - (dt_k + cfg.econ_hx_approach_k))
    return result


def _reject_tower(
    mech_heat_w: np.ndarray,
    load_frac: np.ndarray,
    setpoint_k: np.ndarray,
    sp: Setpoints,
    t_wetbulb_c: np.ndarray,
    cfg: CoolingConfig,
    design_heat_w: float,
    cw: _CondenserFlow | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(compressor W, free-cooled share, tower fan W) of the air path with the condenser water asked at
    wet bulb + `setpoint_k`, the condenser water at less than design flow by `cw` (None: design flow). The
    economiser runs on the coldest water the tower makes (fans at full speed; only as cold as the chilled
    water needs, less its heat exchanger's rise, once it carries the whole load); the chiller alone gets
    the setpoint's water; either way no colder than full speed nor warmer than minimum speed makes it."""
    coldest_k = tower_approach_k(cfg, load_frac, 1.0)
    warmest_k = tower_approach_k(cfg, load_frac, cfg.tower_fan_min_frac)
    lift_rise_k: np.ndarray | float = 0.0  # condensing temperature above its design-flow value
    hx_rise_k: np.ndarray | float = 0.0  # how much colder the economiser needs the tower water
    if cw is not None:  # less condenser water (module docstring); at design flow all three stay 1 / 0 / 0
        coldest_k, warmest_k = coldest_k * cw.tower_factor, warmest_k * cw.tower_factor
        lift_rise_k = cw.lift_rise_k
        hx_rise_k = cw.hx_rise_k * mech_heat_w / max(design_heat_w, 1e-9)
    margin = sp.chilled_water_c - (t_wetbulb_c + coldest_k + hx_rise_k)
    free = _clip(margin / 3.0 + 1.0, 0.0, 1.0) * sp.economiser_flag  # linear over a 3 K band, as `_reject`
    # economiser running: chilled water - wet bulb (below `coldest_k` inside the band, so clipped to it)
    asked_k = np.where(free > 0, np.asarray(sp.chilled_water_c) - t_wetbulb_c - hx_rise_k, setpoint_k)
    approach_k = np.minimum(np.maximum(asked_k, coldest_k), warmest_k)
    t_cond = t_wetbulb_c + approach_k + 2.0 + lift_rise_k  # condenser approach, as `_reject`, + less flow's rise
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


def coil_approach_k(
    cfg: CoolingConfig, chw_delta_t_k: np.ndarray | float, airflow_ratio_frac: np.ndarray | float
) -> np.ndarray | float:
    """Supply air minus chilled water (K) the CRAH coil needs when its water warms by `chw_delta_t_k`:
    counterflow epsilon-NTU at the NTU that gives `coil_approach_k` at the design delta T and matched
    airflow (see the module docstring); NaN delta T: the fixed `coil_approach_k`.

    >>> cool = CoolingConfig()
    >>> [round(float(coil_approach_k(cool, dt_k, 1.0)), 2) for dt_k in (cool.chw_delta_t_design_k, 9.0, 11.0)]
    [6.0, 7.62, 9.1]
    """
    if isinstance(chw_delta_t_k, float | int) and isinstance(airflow_ratio_frac, float | int):
        return _coil_approach_scalar_k(cfg, float(chw_delta_t_k), float(airflow_ratio_frac))
    dt_w = np.asarray(chw_delta_t_k, dtype=float)
    nan = np.isnan(dt_w)
    if nan.all():  # the fixed rule (and the fast path for the fixed-rule twin)
        return cfg.coil_approach_k
    # air through the coil: from the hot aisle (inlet + server delta T) down to the supply air
    share = _clip(1.0 - np.asarray(airflow_ratio_frac), 0.0, 0.9) + cfg.containment_leak_frac
    dt_air_k = cfg.server_delta_t_k / (1.0 - share)
    cr = np.minimum(dt_w / dt_air_k, 0.98)  # (water delta T / air delta T); air is the smaller capacity
    r_w = cfg.coil_water_resistance_frac  # water-side resistance ~ velocity^-0.8, velocity ~ 1 / delta T
    ntu = _coil_design_ntu(cfg) / (1.0 - r_w + r_w * (dt_w / cfg.chw_delta_t_design_k) ** 0.8)
    e = np.exp(-ntu * (1.0 - cr))
    approach: np.ndarray = dt_air_k * ((1.0 - cr * e) / (1.0 - e) - 1.0)  # dt_air x (1 / epsilon - 1)
    return np.where(nan, cfg.coil_approach_k, approach) if nan.any() else approach


def _coil_approach_scalar_k(cfg: CoolingConfig, dt_w: float, airflow_ratio_frac: float) -> float:
    """`coil_approach_k` for one operating point, in plain floats (the loop calls it per decision)."""
    if math.isnan(dt_w):
        return cfg.coil_approach_k
    share = min(max(1.0 - airflow_ratio_frac, 0.0), 0.9) + cfg.containment_leak_frac
    dt_air_k = cfg.server_delta_t_k / (1.0 - share)
    cr = min(dt_w / dt_air_k, 0.98)
    r_w = cfg.coil_water_resistance_frac
    ntu = _coil_design_ntu(cfg) / (1.0 - r_w + r_w * (dt_w / cfg.chw_delta_t_design_k) ** 0.8)
    e = math.exp(-ntu * (1.0 - cr))
    return dt_air_k * ((1.0 - cr * e) / (1.0 - e) - 1.0)


def _coil_design_ntu(cfg: CoolingConfig) -> float:
    """The coil's NTU: `coil_approach_k` at the design delta T, matched airflow (counterflow, inverted)."""
    dt_air_k = cfg.server_delta_t_k / (1.0 - cfg.containment_leak_frac)
    eps = dt_air_k / (dt_air_k + cfg.coil_approach_k)
    cr = cfg.chw_delta_t_design_k / dt_air_k
    return -math.log((1.0 - eps) / (1.0 - eps * cr)) / (1.0 - cr)


def coil_supply_air_c(cfg: CoolingConfig, sp: Setpoints) -> np.ndarray:
    """The supply air (C): the setpoint, or the coldest the coil makes from the chilled water."""
    floor = np.asarray(sp.chilled_water_c) + coil_approach_k(cfg, sp.chw_delta_t_k, sp.airflow_ratio_frac)
    result: np.ndarray = np.maximum(sp.supply_air_c, floor)
    return result


def rack_inlet_c(cfg: CoolingConfig, sp: Setpoints) -> np.ndarray:
    """Server inlet temperature (C) under controlled setpoints: the supply air the coil can make, plus
    hot-aisle air recirculated where the CRAHs supply less than the servers draw (mixing balance: a share
    s of intake from the hot aisle warms it by s / (1 - s) x the server's delta T). The CRAH fans' 30 %
    floor, which can only oversupply a lightly loaded room, is left out: the estimate errs warm."""
    supply_c = coil_supply_air_c(cfg, sp)
    share = _clip(1.0 - np.asarray(sp.airflow_ratio_frac), 0.0, 0.9) + cfg.containment_leak_frac
    inlet: np.ndarray = supply_c + share / (1.0 - share) * cfg.server_delta_t_k
    return inlet


def pump_power_frac(cfg: CoolingConfig, flow_frac: np.ndarray, dp_reset_flag: np.ndarray | float) -> np.ndarray:
    """Pump power over its design power at `flow_frac` of design flow: flow x head, the head friction
    (~ flow^2) plus the DP setpoint (reset with the valves: ~ flow^2 too, so power ~ flow^3; held: a fixed
    `pump_fixed_dp_frac` of design head); never below the VFD's minimum speed (module docstring).

    >>> cool = CoolingConfig()
    >>> [round(float(pump_power_frac(cool, np.array(0.5), flag)), 3) for flag in (1.0, 0.0)]  # 90.1: <= 0.30
    [0.125, 0.297]
    >>> [round(float(pump_power_frac(cool, np.array(1.1), flag)), 3) for flag in (1.0, 0.0)]  # no reset above
    [1.225, 1.225]
    """
    # the DP setpoint is `pump_fixed_dp_frac` of design head; reset with the valves it falls as flow^2 below
    # design flow and never rises above its design value (a reset only lowers it), so above design flow a
    # reset plant and a fixed one draw the same
    reset = np.asarray(dp_reset_flag)
    f = np.maximum(flow_frac, cfg.pump_min_speed_frac)
    setpoint = cfg.pump_fixed_dp_frac * (reset * np.minimum(f * f, 1.0) + (1.0 - reset))
    power: np.ndarray = f * (setpoint + (1.0 - cfg.pump_fixed_dp_frac) * f * f)
    return power


def condenser_pump_power_frac(cfg: CoolingConfig, cw_flow_frac: np.ndarray | float) -> np.ndarray:
    """Condenser-water pump power over its design power at `cw_flow_frac` of design flow: the open tower's
    static head (`cw_static_head_frac`) stays, friction goes as flow^2; VFD floor as the chilled water.

    >>> [round(float(condenser_pump_power_frac(CoolingConfig(), f)), 3) for f in (0.6, 0.8, 1.0)]
    [0.312, 0.584, 1.0]
    """
    power = _affinity_power_frac(cw_flow_frac, cfg.cw_static_head_frac, cfg.pump_min_speed_frac)
    result: np.ndarray = np.where(np.asarray(cw_flow_frac) >= 1.0, 1.0, power)
    return result


def _affinity_power_frac(
    flow_frac: np.ndarray | float, held_head_frac: np.ndarray | float, min_speed_frac: float
) -> np.ndarray:
    """Pump power over design at a flow (affinity laws: power = flow x head) whose head keeps
    `held_head_frac` of design (a DP setpoint, a static lift) and loses the rest as flow^2; the pump never
    turns slower than `min_speed_frac` (the flow it makes beyond the need bypasses)."""
    f = np.maximum(flow_frac, min_speed_frac)
    power: np.ndarray = f * (held_head_frac + (1.0 - held_head_frac) * f * f)
    return power


def _variable_flow_pumps_w(
    cfg: CoolingConfig,
    coil_heat_w: np.ndarray,
    liquid_heat_w: np.ndarray,
    air_design_w: float,
    design_heat_w: float,
    sp: Setpoints,
    cdu_asked: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(all pumps W, CDU / facility-water pumps W or None without a liquid loop): chilled-water pumps at
    the flow the coils need (heat / delta T), condenser-water pumps staged with the plant (W per W, as the
    fixed rule), CDU / facility-water pumps at the flow the liquid heat needs at the loop's design delta T,
    the CDU's secondary share at `cdu_asked` of it (None: design; module docstring)."""
    chw_flow = coil_heat_w / air_design_w * cfg.chw_delta_t_design_k / np.asarray(sp.chw_delta_t_k)
    chw_w = cfg.chw_pump_share * cfg.pump_w_per_w * air_design_w * pump_power_frac(cfg, chw_flow, sp.pump_dp_reset_flag)
    pumps_w: np.ndarray = chw_w * (coil_heat_w > 0) + (1.0 - cfg.chw_pump_share) * cfg.pump_w_per_w * coil_heat_w
    cdu_w = None
    if cfg.liquid_fraction > 0:
        liquid_design_w = max(design_heat_w * cfg.liquid_fraction, 1e-9)
        load = liquid_heat_w / liquid_design_w
        cdu = pump_power_frac(cfg, load, sp.pump_dp_reset_flag)
        if cdu_asked is not None:  # less secondary flow; exactly `cdu` where the flow is the design one
            secondary = pump_power_frac(cfg, cdu_secondary_flow_frac(cfg, load, cdu_asked), sp.pump_dp_reset_flag)
            cdu = cdu + cfg.cdu_secondary_pump_share * (secondary - cdu)
        cdu_w = cfg.cdu_pump_w_per_w * liquid_design_w * (cdu * (liquid_heat_w > 0))
        pumps_w = pumps_w + cdu_w
    return pumps_w, cdu_w


def cdu_secondary_flow_frac(
    cfg: CoolingConfig, liquid_load_frac: np.ndarray | float, cdu_flow_frac: np.ndarray | float
) -> np.ndarray:
    """The CDU's secondary flow over its design flow: `cdu_flow_frac` of what the liquid heat needs at the
    design delta T (`liquid_load_frac` of design), never below the turndown `cdu_min_flow_frac`.

    >>> [round(float(cdu_secondary_flow_frac(CoolingConfig(), 0.8, f)), 2) for f in (1.0, 0.5, 0.25)]
    [0.8, 0.4, 0.3]
    """
    result: np.ndarray = np.maximum(np.asarray(liquid_load_frac) * cdu_flow_frac, cfg.cdu_min_flow_frac)
    return result


def chip_case_c(
    cfg: CoolingConfig,
    liquid_load_frac: np.ndarray | float,
    facility_water_c: np.ndarray | float,
    cdu_flow_frac: np.ndarray | float = 1.0,
) -> np.ndarray:
    """Accelerator case temperature (C) on a cold plate: secondary supply (facility water + the CDU's
    approach) + half the plate's coolant rise + chip power x (conduction + convection ~ flow^-exp), the chip
    at `chip_power_w` x `liquid_load_frac` (module docstring: the model, its sources and assumptions).

    >>> cool = CoolingConfig(kind="liquid", liquid_fraction=0.7)
    >>> [round(float(chip_case_c(cool, 1.0, 32.0, f)), 1) for f in (1.0, 0.8, 0.5)]  # W32, full load
    [52.5, 54.6, 60.3]
    """
    load = np.asarray(liquid_load_frac)
    flow = cdu_secondary_flow_frac(cfg, load, cdu_flow_frac)
    loop_dt_k = cfg.cdu_delta_t_design_k * load / flow
    r_mean = cfg.cold_plate_r_k_per_w - cfg.cdu_delta_t_design_k / (2.0 * cfg.chip_power_w)  # case to mean coolant
    r_conv = cfg.cold_plate_conv_frac * r_mean
    r_k_per_w = (r_mean - r_conv) + r_conv * flow**-cfg.cold_plate_flow_exp
    result: np.ndarray = facility_water_c + cfg.cdu_approach_k + 0.5 * loop_dt_k + cfg.chip_power_w * load * r_k_per_w
    return result


def _cdu_flow_asked(sp: Setpoints) -> np.ndarray | None:
    """The CDU flow in force per step (NaN and steps without a `chw_delta_t_k`: design), or None where it is
    the design flow everywhere (the fast path, and the model without the action exactly)."""
    asked = np.asarray(sp.cdu_flow_frac, dtype=float)
    if ((asked == 1.0) | np.isnan(asked)).all():
        return None
    result: np.ndarray = np.where(np.isnan(asked) | np.isnan(np.asarray(sp.chw_delta_t_k)), 1.0, asked)
    return result


class _CondenserFlow(NamedTuple):
    """What less condenser water does, per step or candidate (read-only arrays; module docstring)."""

    tower_factor: np.ndarray  # `tower_flow_approach_factor`
    lift_rise_k: np.ndarray  # `condenser_lift_rise_k`
    hx_rise_k: np.ndarray  # `economiser_hx_rise_k`, at design load
    pump_frac: np.ndarray  # `condenser_pump_power_frac`


def _condenser_flow(cfg: CoolingConfig, sp: Setpoints) -> _CondenserFlow | None:
    """The effects of the condenser flow asked, within the chiller's limits (NaN: design), or None where it
    is the design flow everywhere (the fast path, and the model without the flow exactly)."""
    asked = np.asarray(sp.cw_flow_frac, dtype=float)
    if not (asked < 1.0).any():
        return None
    flow = _clip(np.where(np.isnan(asked), 1.0, asked), cfg.cw_min_flow_frac, 1.0)
    if flow.size > _CACHED_FLOWS_MAX:  # a year of per-step flows (the twin, once a run): not worth keeping
        return _condenser_flow_cached.__wrapped__(cfg, flow.tobytes(), flow.shape)
    return _condenser_flow_cached(cfg, flow.tobytes(), flow.shape)


_CACHED_FLOWS_MAX = 16_384  # the MPC's candidate columns are ~4,000 long at most


@functools.lru_cache(maxsize=64)
def _condenser_flow_cached(cfg: CoolingConfig, flow_bytes: bytes, shape: tuple[int, ...]) -> _CondenserFlow:
    """`_condenser_flow` memoised on the flow's values (a performance hack: the MPC's candidate columns
    repeat every decision, 35,040 a year, ~30 distinct ones, and these cost ~70 us a call; exact)."""
    f = np.frombuffer(flow_bytes).reshape(shape)
    effects = _CondenserFlow(
        tower_flow_approach_factor(cfg, f),
        condenser_lift_rise_k(cfg, f),
        economiser_hx_rise_k(cfg, f),
        condenser_pump_power_frac(cfg, f),
    )
    for a in effects:
        a.setflags(write=False)
    return effects


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
    inlet_c: np.ndarray | None = None,
) -> CoolingResult:
    """Cooling power and water for `heat_w` of heat in the white space; at the design's fixed setpoints,
    or at a controller's `setpoints` (coil approach, recirculation and airflow then count). `inlet_c`:
    `rack_inlet_c(cfg, setpoints)` when the caller has it (a performance hack: the MPC's candidates are
    fixed, and it calls this 35,040 times a year)."""
    sp = setpoints or fixed_setpoints(cfg)
    liquid_heat = heat_w * cfg.liquid_fraction
    air_heat = heat_w - liquid_heat
    air_design = max(design_heat_w * (1.0 if cfg.crah_sized_for_all_heat else 1.0 - cfg.liquid_fraction), 1e-9)
    capacity = design_heat_w * (1 + cfg.capacity_margin)
    overload = np.maximum(heat_w / capacity - 1.0, 0.0)
    if setpoints is None:
        inlet = np.full_like(heat_w, cfg.supply_air_c)
    else:
        inlet = (rack_inlet_c(cfg, sp) if inlet_c is None else inlet_c) + 0 * heat_w
    flow = _clip(sp.airflow_ratio_frac * air_heat / air_design, 0.3, 1.5) if cfg.fan_vfd else np.ones_like(heat_w)
    crah = cfg.crah_fan_w_per_w * air_design * flow**3 * (air_heat > 0)
    sink = t_wetbulb_c if cfg.water_cooled else t_drybulb_c
    approach = cfg.tower_approach_k if cfg.water_cooled else cfg.dry_cooler_approach_k
    air_mech_heat = air_heat
    if cfg.air_side_economiser:  # outside air when it is within the envelope
        supply_air_c = cfg.supply_air_c if setpoints is None else coil_supply_air_c(cfg, sp)
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
    cw = None  # condenser water at design flow unless a controlled tower is asked for less
    if tower_reset:  # one tower for both paths; its load leaves out compressor heat (scales alike, assumption)
        if unset.any():  # a step without a setpoint: the design approach
            setpoint_k = np.where(unset, cfg.tower_approach_k, setpoint_k)
        load_frac = (air_mech_heat + liquid_heat * (1 - dry_free)) / max(design_heat_w, 1e-9)
        cw = _condenser_flow(cfg, sp)
        chiller_air, free_air, tower_fan = _reject_tower(
            air_mech_heat, load_frac, setpoint_k, sp, sink, cfg, design_heat_w, cw
        )
    else:
        chiller_air, free_air = _reject(air_mech_heat, sp.chilled_water_c, sink, approach, cfg, sp.economiser_flag)
    inlet = inlet + 10.0 * overload  # an overloaded plant lets the room warm (coarse, labelled estimate)
    tower_heat = (air_mech_heat + chiller_air) * cfg.water_cooled + liquid_heat * (1 - dry_free)
    dry_heat = liquid_heat * dry_free + (air_mech_heat + chiller_air) * (not cfg.water_cooled)
    pumps = cfg.pump_w_per_w * air_mech_heat + cfg.cdu_pump_w_per_w * liquid_heat  # the fixed rule
    cdu_pumps = cfg.cdu_pump_w_per_w * liquid_heat if cfg.liquid_fraction > 0 else None  # part of `pumps`
    chw_dt = np.asarray(sp.chw_delta_t_k)
    cold_plates = cfg.kind == "liquid" and cfg.liquid_fraction > 0
    cdu_asked = _cdu_flow_asked(sp) if setpoints is not None and cold_plates else None
    if setpoints is not None and not np.isnan(chw_dt).all():  # variable flow; NaN steps keep the fixed rule
        variable, variable_cdu = _variable_flow_pumps_w(
            cfg, air_mech_heat, liquid_heat, air_design, design_heat_w, sp, cdu_asked
        )
        fixed_rule = np.isnan(chw_dt)
        pumps = np.where(fixed_rule, pumps, variable) if fixed_rule.any() else variable
        if cdu_pumps is not None and variable_cdu is not None:
            cdu_pumps = np.where(fixed_rule, cdu_pumps, variable_cdu) if fixed_rule.any() else variable_cdu
    if cw is not None:  # the condenser pumps (staged with the heat) at less than design flow
        staged_w = (1.0 - cfg.chw_pump_share) * cfg.pump_w_per_w * air_mech_heat
        pumps = pumps - staged_w * (1.0 - cw.pump_frac)
    tower_fans = tower_fan if tower_reset else cfg.tower_fan_w_per_w * tower_heat
    rejection_fans = tower_fans + cfg.dry_cooler_fan_w_per_w * dry_heat
    evaporated_kg = tower_heat / LATENT_HEAT_J_PER_KG  # per second of operation
    water_l_per_s = evaporated_kg * (1 + 1 / (cfg.tower_cycles - 1))  # plus blowdown; 1 kg ~ 1 L
    mech_share = (chiller_air > 0) * air_mech_heat * (1 - free_air) + liquid_heat * (1 - dry_free) * (1 - wet_free)
    free_frac = 1.0 - mech_share / np.maximum(heat_w, 1e-9)
    chip = None
    if cold_plates:  # the liquid load per design liquid heat is the heat's share of the design heat
        load = heat_w / max(design_heat_w, 1e-9)
        chip = chip_case_c(cfg, load, fw_c, 1.0 if cdu_asked is None else cdu_asked)
    return CoolingResult(
        crah, chiller_air + chiller_liq, pumps, rejection_fans, water_l_per_s, inlet, free_frac, chip, cdu_pumps
    )


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
