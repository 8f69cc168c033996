"""Request traces: the `Trace` type, the Azure LLM inference CSV reader, and trace statistics.

A trace is columnar (numpy arrays, one entry per request, sorted by arrival) so a million-request
trace stays cheap. Azure format: `TIMESTAMP,ContextTokens,GeneratedTokens` (Patel et al., Splitwise,
ISCA 2024; Azure Public Dataset, CC BY 4.0).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

PRIORITIES = ("interactive", "batch")  # index 0 is served first


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the file, line and fix."""


@dataclass(frozen=True)
class Request:
    """One request of a trace."""

    request_id: int
    arrival_s: float  # since the start of the trace
    prompt_tokens: int
    output_tokens: int
    priority: str  # "interactive" | "batch"


@dataclass(frozen=True)
class Trace:
    """Requests as parallel arrays sorted by arrival. `priority` holds indices into PRIORITIES."""

    name: str
    arrival_s: np.ndarray  # float64, seconds since the first request
    prompt_tokens: np.ndarray  # int64
    output_tokens: np.ndarray  # int64
    priority: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        if len(self.priority) == 0 and n:
            object.__setattr__(self, "priority", np.zeros(n, dtype=np.int8))
        if not (len(self.prompt_tokens) == len(self.output_tokens) == len(self.priority) == n):
            raise TraceError(f"trace {self.name!r}: column lengths differ")

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def duration_s(self) -> float:
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) > 1 else 0.0

    def requests(self) -> list[Request]:
        return [
            Request(i, float(a), int(p), int(o), PRIORITIES[int(c)])
            for i, (a, p, o, c) in enumerate(
                zip(self.arrival_s, self.prompt_tokens, self.output_tokens, self.priority, strict=True)
            )
        ]

    def scaled(self, time_scale: float) -> Trace:
        """Arrivals `time_scale` times faster (2.0 = twice the request rate), lengths unchanged."""
        if time_scale <= 0:
            raise TraceError(f"time_scale must be > 0, got {time_scale}")
        return _replace(self, arrival_s=self.arrival_s / time_scale, name=f"{self.name} x{time_scale:g}")

    def window(self, duration_s: float) -> Trace:
        """The requests that arrive in the first `duration_s` seconds."""
        keep = self.arrival_s < duration_s
        return _replace(
            self,
            arrival_s=self.arrival_s[keep],
            prompt_tokens=self.prompt_tokens[keep],
            output_tokens=self.output_tokens[keep],
            priority=self.priority[keep],
        )

    def with_priorities(self, interactive_fraction: float, seed: int = 0) -> Trace:
        """Assign each request a class: interactive with probability `interactive_fraction`, else batch."""
        rng = np.random.default_rng(seed)
        prio = (rng.random(len(self)) >= interactive_fraction).astype(np.int8)
        return _replace(self, priority=prio)


def _replace(trace: Trace, **changes: object) -> Trace:
    values: dict[str, Any] = {
        "name": trace.name,
        "arrival_s": trace.arrival_s,
        "prompt_tokens": trace.prompt_tokens,
        "output_tokens": trace.output_tokens,
        "priority": trace.priority,
        "source": trace.source,
    }
    values.update(changes)
    return Trace(**values)


AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


def read_azure_csv(path: str | Path) -> Trace:
    """Read an Azure LLM inference trace (`TIMESTAMP,ContextTokens,GeneratedTokens`)."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"trace file {path} does not exist; give the path to a CSV with columns {AZURE_COLUMNS}")
    times, prompts, outputs = [], [], []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in AZURE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise TraceError(
                f"{path}: missing column(s) {missing}; an Azure trace has the header {','.join(AZURE_COLUMNS)}"
            )
        for line, row in enumerate(reader, start=2):
            try:
                times.append(_parse_timestamp(row["TIMESTAMP"]))
                prompts.append(int(row["ContextTokens"]))
                outputs.append(int(row["GeneratedTokens"]))
            except (TypeError, ValueError) as exc:
                raise TraceError(
                    f"{path}:{line}: bad value ({exc}); expected 'YYYY-MM-DD HH:MM:SS.ffffff,int,int'"
                ) from exc
            if prompts[-1] < 0 or outputs[-1] < 0:
                raise TraceError(f"{path}:{line}: token counts must be >= 0")
    if not times:
        raise TraceError(f"{path}: no requests in file")
    t = np.array(times)
    order = np.argsort(t, kind="stable")
    return Trace(
        name=path.stem,
        arrival_s=t[order] - t[order[0]],
        prompt_tokens=np.array(prompts, dtype=np.int64)[order],
        output_tokens=np.array(outputs, dtype=np.int64)[order],
        source=f"measured: {path.name}",
    )


def _parse_timestamp(text: str) -> float:
    text = text.strip()
    if "." in text:  # Azure writes 7 fractional digits; datetime takes at most 6
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6]}"
    return datetime.fromisoformat(text).timestamp()


@dataclass(frozen=True)
class TraceStats:
    """Summary of a trace; token percentiles at 5/25/50/75/95/99."""

    n_requests: int
    duration_s: float
    arrival_rate_per_s: float
    interarrival_cv: float  # 1.0 for Poisson arrivals
    prompt_tokens_mean: float
    output_tokens_mean: float
    prompt_tokens_pct: dict[str, float]
    output_tokens_pct: dict[str, float]
    interactive_fraction: float


PERCENTILES = (5, 25, 50, 75, 95, 99)


def trace_stats(trace: Trace) -> TraceStats:
    """Arrival rate, burstiness and token-length distributions of a trace."""
    if len(trace) == 0:
        raise TraceError(f"trace {trace.name!r} is empty")
    gaps = np.diff(trace.arrival_s)
    cv = float(gaps.std() / gaps.mean()) if len(gaps) > 1 and gaps.mean() > 0 else float("nan")
    duration = trace.duration_s
    rate = (len(trace) - 1) / duration if duration > 0 else float("nan")

    def pct(x: np.ndarray) -> dict[str, float]:
        return {f"p{q}": float(v) for q, v in zip(PERCENTILES, np.percentile(x, PERCENTILES), strict=True)}

    return TraceStats(
        n_requests=len(trace),
        duration_s=duration,
        arrival_rate_per_s=rate,
        interarrival_cv=cv,
        prompt_tokens_mean=float(trace.prompt_tokens.mean()),
        output_tokens_mean=float(trace.output_tokens.mean()),
        prompt_tokens_pct=pct(trace.prompt_tokens),
        output_tokens_pct=pct(trace.output_tokens),
        interactive_fraction=float((trace.priority == 0).mean()),
    )
