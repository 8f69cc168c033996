"""The hot-path profiler: operator-class time and energy, roofline classes, and advice."""

from joulepath.profile.advice import Advice, Lever
from joulepath.profile.hotpath import ClassCost, HotPathProfile, profile_engine
from joulepath.profile.limits import DeviceLimits, measure_limits

__all__ = ["Advice", "ClassCost", "DeviceLimits", "HotPathProfile", "Lever", "measure_limits", "profile_engine"]
