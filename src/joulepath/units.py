"""Unit constants and conversions. Every physical quantity in joulepath carries its unit in its name
(`energy_j`, `power_w`, `dt_s`); these helpers are the only place conversions happen."""

J_PER_WH = 3600.0
J_PER_KWH = 3.6e6
J_PER_MWH = 3.6e9
BYTES_PER_GB = 1e9
FLOP_PER_TFLOP = 1e12
BITS_PER_BYTE = 8
PJ = 1e-12


def j_to_kwh(energy_j: float) -> float:
    """Joules to kilowatt-hours: `j_to_kwh(3.6e6) == 1.0`."""
    return energy_j / J_PER_KWH


def kwh_to_j(energy_kwh: float) -> float:
    """Kilowatt-hours to joules."""
    return energy_kwh * J_PER_KWH


def j_to_wh(energy_j: float) -> float:
    """Joules to watt-hours."""
    return energy_j / J_PER_WH


def movement_energy_j(n_bytes: float, energy_pj_per_bit: float) -> float:
    """Energy to move `n_bytes` at `energy_pj_per_bit`: bytes x 8 bit x pJ/bit."""
    return n_bytes * BITS_PER_BYTE * energy_pj_per_bit * PJ
