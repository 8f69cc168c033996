"""A supply controller for the twin's feedback loop (`facility.feedback`): the battery and admission of
deferrable work against the grid's carbon intensity, decided every control interval.

`CarbonAwareSupply` is a rule, not an optimiser: it compares the coming interval's carbon intensity with
the mean of the last day's (what it has seen; no forecast of carbon) and
- charges the battery at its rated power when the grid is cleaner than that mean by more than `band`,
  discharges when dirtier by more than `band`, and holds otherwise (the default band, 6.5 %, makes the
  dirtier-to-cleaner ratio (1 + band) / (1 - band) = 1.139 exceed 1 / 0.88, the round trip's break-even,
  against a mean that moves between the charge and the discharge, so it is a heuristic margin);
- admits deferrable work only while the grid is at or below the mean; otherwise the loop's deadline
  guard alone releases it (nothing finishes late by the rule's doing).
The receding-horizon LP of `control.shift` is the optimiser for the same decisions on hourly series (the
main job's shifting); this rule is the feedback loop's own, cheap enough for a 1-minute year.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from joulepath.facility.feedback import Forecast, SupplyActions, SupplyState
from joulepath.facility.supply import StorageConfig


@dataclass
class CarbonAwareSupply:
    """Battery and admission by the grid's carbon intensity against its trailing one-day mean. Keeps the
    carbon it has seen: use a fresh instance per run."""

    storage: StorageConfig
    band: float = 0.065  # (1 + band) / (1 - band) > 1 / 0.88: a Li-ion round trip's break-even
    window_intervals: int = 96  # a day of 15-minute intervals
    name: str = "carbon-aware-supply"
    _seen: deque[float] = field(default_factory=deque, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.band < 1.0:
            raise ValueError(f"band must be in [0, 1), got {self.band}")
        if self.window_intervals < 1:
            raise ValueError(f"window_intervals must be >= 1, got {self.window_intervals}")

    def decide(self, state: SupplyState, forecast: Forecast) -> SupplyActions:
        self._seen.append(state.carbon_g_per_kwh)
        if len(self._seen) > self.window_intervals:
            self._seen.popleft()
        mean = sum(self._seen) / len(self._seen)
        battery = 0.0
        if state.carbon_g_per_kwh < mean * (1.0 - self.band):
            battery = -self.storage.power_w
        elif state.carbon_g_per_kwh > mean * (1.0 + self.band):
            battery = self.storage.power_w
        admit = float("inf") if state.carbon_g_per_kwh <= mean else 0.0
        return SupplyActions(battery_w=battery, admit_board_w=admit)
