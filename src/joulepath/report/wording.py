"""Numbers in words, the right way round: a ratio below 1 is "x less", above 1 "x more", and a local
ratio's spread over repetitions decides whether a difference was measured at all.

    >>> times_phrase(1 / 1.85, "more energy", "less energy")
    '1.85x less energy'
    >>> times_phrase(1.85, "more energy", "less energy")
    '1.85x more energy'
"""

from __future__ import annotations

import math

from joulepath.results import LocalComparison, RatioSpread

NO_DIFFERENCE = "no significant difference measured"
# For each local ratio (optimized / baseline): its name, and the words for above 1 and below 1.
RATIO_WORDS = {
    "j_per_token": ("energy per output token", "more energy per token", "less energy per token"),
    "tokens_per_s": ("throughput", "higher throughput", "lower throughput"),
    "ttft_p99_s": ("p99 time to first token", "longer p99 time to first token", "shorter p99 time to first token"),
}


def times_phrase(ratio: float, more: str, less: str) -> str:
    """`ratio` (new / old) as "N.NNx more ..." or "N.NNx less ..." with N.NN >= 1, never "0.54x less"."""
    if not math.isfinite(ratio) or ratio <= 0:
        return f"n/a ({more}: ratio undefined)"
    if round(ratio, 2) == 1.0 or round(1 / ratio, 2) == 1.0:
        return f"about the same ({more.split(' ', 1)[-1]})"
    return f"{ratio:.2f}x {more}" if ratio > 1 else f"{1 / ratio:.2f}x {less}"


def spread_range(spread: RatioSpread) -> str:
    """The min-max of a ratio as `low–high` (optimized / baseline)."""
    return f"{spread.low:.2f}–{spread.high:.2f}"


def ratio_phrase(spread: RatioSpread) -> str:
    """The median ratio in words (`1.57x less energy per token`)."""
    _, more, less = RATIO_WORDS[spread.metric]
    return times_phrase(spread.median, more, less)


def ratio_verdict(spread: RatioSpread) -> str:
    """What the repetitions show, in one line: the median ratio in words with its spread, or plainly
    "no significant difference measured" when the min-max spread includes 1.0."""
    n = len(spread.values)
    if n == 0:
        return "not measured (no finite ratio)"
    if not spread.spread_known:
        return f"{ratio_phrase(spread)} (one repetition: no spread measured)"
    detail = f"optimized / baseline {spread_range(spread)} over {n} interleaved repetitions"
    if spread.includes_one:
        return f"{NO_DIFFERENCE} (median: {ratio_phrase(spread)}; {detail})"
    return f"{ratio_phrase(spread)} (median; {detail})"


def gain_text(j_ratio: RatioSpread | None, dash: str = "–") -> str | None:
    """A J-per-token ratio (after / before, paired repetitions) as a tokens-per-joule gain with its
    min-max, `1.77x (1.66–1.85)`, marked when the spread includes 1.0; None with no usable values."""
    if j_ratio is None or not j_ratio.values or j_ratio.low <= 0:
        return None
    g = j_ratio.inverted("tokens_per_joule")
    text = f"{g.median:.2f}x ({g.low:.2f}{dash}{g.high:.2f})"
    return f"{text}, {NO_DIFFERENCE}" if g.spread_known and g.includes_one else text


def served_in_words(local: LocalComparison) -> str:
    """What was served here and how it was repeated, e.g. "144 requests in 3 interleaved repetitions of 48"."""
    n, per = len(local.optimized_answers), len(local.optimized.requests) + len(local.optimized.blocked)
    if n > per:
        return (
            f"{n} requests in {local.repeats} interleaved repetitions of {per} (each repetition its own slice, "
            f"served by every configuration)"
        )
    return f"{n} requests, {local.repeats} times per configuration (interleaved)"
