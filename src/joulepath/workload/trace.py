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
from typing import Any, TextIO

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
    """Read an Azure LLM inference trace (`TIMESTAMP,ContextTokens,GeneratedTokens`). Every row must have
    as many columns as the header; a bad row is refused with its line number and the expected header."""
    path = Path(path)
    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "does not exist"
        raise TraceError(f"trace file {path} {problem}; give the path to a CSV with columns {AZURE_COLUMNS}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            times, prompts, outputs = _read_rows(path, fh)
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path}: not a text CSV ({exc.reason} at byte {exc.start}); {_FORMAT}") from None
    except csv.Error as exc:
        raise TraceError(f"{path}: not a readable CSV ({exc}); {_FORMAT}") from None
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


_FORMAT = f"an Azure trace has the header {','.join(AZURE_COLUMNS)} and rows like '2023-11-16 18:15:46.6805900,374,44'"


def _read_rows(path: Path, fh: TextIO) -> tuple[list[float], list[int], list[int]]:
    """(arrival timestamps, prompt tokens, output tokens) of every non-blank row after the header."""
    reader = csv.reader(fh)
    header = next(reader, [])
    missing = [c for c in AZURE_COLUMNS if c not in header]
    if missing:
        raise TraceError(f"{path}: missing column(s) {missing}; {_FORMAT}")
    col = {c: header.index(c) for c in AZURE_COLUMNS}
    times, prompts, outputs = [], [], []
    for row in reader:
        line = reader.line_num  # the file's line where this row ends (blank lines counted)
        if not row:
            continue  # a blank line
        if len(row) != len(header):
            raise TraceError(
                f"{path}:{line}: {len(row)} column(s) where the header has {len(header)}; every row needs one value "
                f"per column of the header {','.join(header)}"
            )
        try:
            times.append(_parse_timestamp(row[col["TIMESTAMP"]]))
            prompts.append(int(row[col["ContextTokens"]]))
            outputs.append(int(row[col["GeneratedTokens"]]))
        except ValueError as exc:
            raise TraceError(
                f"{path}:{line}: bad value ({exc}); expected 'YYYY-MM-DD HH:MM:SS.ffffff,int,int'"
            ) from None
        if prompts[-1] < 0 or outputs[-1] < 0:
            raise TraceError(f"{path}:{line}: token counts must be >= 0")
    return times, prompts, outputs


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
