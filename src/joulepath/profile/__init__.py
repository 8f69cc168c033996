"""The hot-path profiler: operator-class time and energy, roofline classes, and advice. Its result types
(HotPathProfile, ClassCost, Advice, Lever, DeviceLimits) live in `joulepath.results`."""

from joulepath.profile.hotpath import profile_engine
from joulepath.profile.limits import measure_limits

__all__ = ["measure_limits", "profile_engine"]
