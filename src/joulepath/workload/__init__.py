"""Request traces: readers, seeded synthetic generators fitted to real traces, statistics.

Imports nothing of joulepath (no torch): traces are plain numpy columns.
"""

from joulepath.workload.synthetic import LogNormalMixture, SyntheticParams, fit_synthetic, generate
from joulepath.workload.trace import PRIORITIES, Request, Trace, TraceError, TraceStats, read_azure_csv, trace_stats

__all__ = [
    "PRIORITIES",
    "LogNormalMixture",
    "Request",
    "SyntheticParams",
    "Trace",
    "TraceError",
    "TraceStats",
    "fit_synthetic",
    "generate",
    "read_azure_csv",
    "trace_stats",
]
