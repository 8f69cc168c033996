"""Near-duplicate question pairs for auditing a semantic answer cache, seeded.

Different-answer pairs (a cache hit between them is a false hit): swapped numbers in addition and
multiplication, a changed unit in conversions, larger vs smaller and a changed number in comparisons,
ascending vs descending sorts, two letters swapped in reversals, another item counted, another key
looked up in the same document, and negations in free text ("Is it safe to X?" vs "Is it not safe to
X?"). Every arithmetic pair's two answers are computed and differ.

Same-answer pairs (a hit is wanted): operands commuted or the question reworded in arithmetic, the
numbers listed in another order for compare and sort, reworded conversions, counts and lookups, and
reworded free-text questions. Only rewordings whose answer the generator knows to be the same.

    python -m joulepath.serving.near_duplicates   # audits the offline MiniLM and prints the result
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from joulepath.quality.tasks import UNITS_J, UNITS_W, _fmt, make_document
from joulepath.serving.answer_cache import (
    FALSE_HIT_BUDGET,
    CacheAudit,
    Embedder,
    SemanticAnswerCache,
    audit,
    pair_cosines,
)


@dataclass(frozen=True)
class Pair:
    """Two questions; `same_answer` says whether one's answer is right for the other."""

    a: str
    b: str
    same_answer: bool
    kind: str


def _arith(rng: random.Random, op: str) -> tuple[Pair, Pair]:
    x, y = rng.randint(2, 9999), rng.randint(2, 9999)
    y2 = y + rng.choice([-1, 1]) * rng.randint(1, 9)  # x + y != x + y2 (y2 != y); for *, x >= 2 keeps them apart
    word = {"+": "the sum", "*": "the product"}[op]
    a = f"What is {x} {op} {y}?"
    same = (
        rng.choice([f"What is {y} {op} {x}?", f"What is {word} of {x} and {y}?"])
        if x != y
        else f"What is {word} of {x} and {y}?"
    )
    return Pair(a, f"What is {x} {op} {y2}?", False, f"{op} number"), Pair(a, same, True, f"{op} reworded")


def _convert(rng: random.Random) -> tuple[Pair, Pair]:
    table = UNITS_J if rng.random() < 0.5 else UNITS_W
    src, dst, other = rng.sample(list(table), 3)  # other unit, other scale: another answer
    value = Decimal(rng.randint(1, 999))
    a = f"Convert {_fmt(value)} {src} to {dst}."
    b = f"Convert {_fmt(value)} {other} to {dst}."
    same = rng.choice([f"How many {dst} is {_fmt(value)} {src}?", f"Convert {_fmt(value)} {src} into {dst}."])
    return Pair(a, b, False, "convert unit"), Pair(a, same, True, "convert reworded")


def _compare(rng: random.Random) -> tuple[Pair, Pair]:
    x, y = rng.sample(range(10, 10000), 2)
    a = f"Which is larger: {x} or {y}?"
    if rng.random() < 0.5:
        b = f"Which is smaller: {x} or {y}?"
    else:  # the smaller one jumps above the larger: the answer moves
        lo, hi = min(x, y), max(x, y)
        b = (
            a.replace(str(lo), str(hi + rng.randint(1, 99)), 1)
            if str(lo) not in str(hi)
            else f"Which is smaller: {x} or {y}?"
        )
    return Pair(a, b, False, "compare"), Pair(a, f"Which is larger: {y} or {x}?", True, "compare order")


def _sort(rng: random.Random) -> tuple[Pair, Pair]:
    xs = rng.sample(range(100), rng.randint(3, 8))
    shuffled = rng.sample(xs, len(xs))
    a = f"Sort ascending: {', '.join(map(str, xs))}"
    b = f"Sort descending: {', '.join(map(str, xs))}"
    return Pair(a, b, False, "sort direction"), Pair(
        a, f"Sort ascending: {', '.join(map(str, shuffled))}", True, "sort order"
    )


def _reverse(rng: random.Random) -> tuple[Pair, Pair]:
    letters = rng.sample("abcdefghijklmnopqrstuvwxyz", rng.randint(4, 12))  # distinct: a swap changes the answer
    k = rng.randrange(len(letters) - 1)
    swapped = [*letters[:k], letters[k + 1], letters[k], *letters[k + 2 :]]
    a = f"Reverse: {' '.join(letters)}"
    return (
        Pair(a, f"Reverse: {' '.join(swapped)}", False, "reverse swap"),
        Pair(a, f"Reverse the letters: {' '.join(letters)}", True, "reverse reworded"),
    )


def _count(rng: random.Random) -> tuple[Pair, Pair]:
    while True:
        items = [rng.choice(["apple", "pear", "fig", "plum"]) for _ in range(rng.randint(5, 20))]
        t1, t2 = rng.sample(sorted(set(items)), 2) if len(set(items)) > 1 else (items[0], items[0])
        if items.count(t1) != items.count(t2):
            break
    listed = " ".join(items)
    a = f"How many times does {t1} appear in: {listed}?"
    return (
        Pair(a, f"How many times does {t2} appear in: {listed}?", False, "count target"),
        Pair(a, f"Count how often {t1} occurs in: {listed}?", True, "count reworded"),
    )


def _lookup(rng: random.Random) -> tuple[Pair, Pair]:
    level = rng.choice(["easy", "medium"])  # 12 or 40 lines: medium runs past MiniLM's 256-word-piece window
    text, values = make_document(rng, level, "doc")
    while True:
        k1, k2 = rng.sample(list(values), 2)
        if values[k1] != values[k2]:
            break
    a = f"{text}\nWhat is the value of {k1}?"
    return (
        Pair(a, f"{text}\nWhat is the value of {k2}?", False, f"lookup key ({level})"),
        Pair(a, f"{text}\nWhat value does {k1} have?", True, f"lookup reworded ({level})"),
    )


ACTIONS = (
    "run the GPUs above their rated power limit",
    "turn off the chillers during a heat wave",
    "mix two coolant types",
    "raise the supply air temperature to 27 C",
    "skip the UPS battery test this month",
    "share the cluster's root password",
    "reboot the storage nodes during business hours",
    "disable thermal throttling",
    "overclock the memory",
    "store backups in the same building",
    "run the diesel generators indoors",
    "open the cold aisle doors",
    "deploy on a Friday afternoon",
    "delete old checkpoints",
    "let the inlet water reach 45 C",
    "use consumer SSDs for the write-ahead log",
    "pin the fans at 100 percent",
    "run the batch jobs at night",
    "put the transformer next to the server hall",
    "disable ECC memory",
    "cache answers for sampled requests",
    "load the racks above 40 kW",
    "ignore a single failed disk in RAID 6",
    "switch the grid feed without warning",
)
WHERE = ("", " in our data center", " on the H100 nodes", " this week", " during the night shift", " in the new hall")
FACTS = (
    ("liquid cooling", "lower the PUE"),
    ("a higher power cap", "raise the energy per token"),
    ("batching", "raise throughput"),
    ("prefix caching", "lower time to first token"),
    ("quantization", "reduce memory use"),
    ("free cooling", "save energy in winter"),
    ("solar power", "cut grid carbon at noon"),
    ("a larger batch", "raise latency per token"),
    ("speculative decoding", "change greedy outputs"),
)


def _negation(rng: random.Random) -> tuple[Pair, Pair]:
    action = rng.choice(ACTIONS) + rng.choice(WHERE)
    subject, effect = rng.choice(FACTS)
    options = [
        (f"Is it safe to {action}?", f"Is it not safe to {action}?", f"Is it safe for us to {action}?"),
        (f"Should I {action}?", f"Should I not {action}?", f"Is it a good idea to {action}?"),
        (f"Is it a good idea to {action}?", f"Is it a bad idea to {action}?", f"Would it be wise to {action}?"),
        (f"Does {subject} {effect}?", f"Does {subject} not {effect}?", f"Is it true that {subject} can {effect}?"),
        (f"Is it allowed to {action}?", f"Is it forbidden to {action}?", f"Are we allowed to {action}?"),
    ]
    a, b, same = rng.choice(options)
    return Pair(a, b, False, "negation"), Pair(a, same, True, "free text reworded")


MAKERS: tuple[Callable[[random.Random], tuple[Pair, Pair]], ...] = (
    lambda rng: _arith(rng, "+"),
    lambda rng: _arith(rng, "*"),
    _convert,
    _compare,
    _sort,
    _reverse,
    _count,
    _lookup,
    _negation,
)


def near_duplicate_pairs(per_kind: int = 500, seed: int = 0) -> list[Pair]:
    """`per_kind` different-answer and `per_kind` same-answer pairs from each maker, deduplicated."""
    rng, pairs, seen = random.Random(seed), [], set()
    for make in MAKERS:
        for _ in range(per_kind):
            for pair in make(rng):
                if pair.a != pair.b and (pair.a, pair.b) not in seen:
                    seen.add((pair.a, pair.b))
                    pairs.append(pair)
    return pairs


@dataclass(frozen=True)
class AuditReport:
    """An audit and where its false hits and paraphrase hits fall, per kind of pair: kind -> (hits, pairs)."""

    audit: CacheAudit
    by_kind: dict[str, tuple[int, int]]


def audit_pairs(
    embed: Embedder,
    pairs: Sequence[Pair],
    threshold: float | None = None,
    budget: float = FALSE_HIT_BUDGET,
    embedder: str = "",
) -> AuditReport:
    """Embed every pair, choose (or check) the threshold, and count hits per kind."""
    return audit_cosines(pairs, pair_cosines(embed, [(p.a, p.b) for p in pairs]), threshold, budget, embedder)


def audit_cosines(
    pairs: Sequence[Pair],
    cos: np.ndarray,
    threshold: float | None = None,
    budget: float = FALSE_HIT_BUDGET,
    embedder: str = "",
) -> AuditReport:
    """`audit_pairs` on cosines already computed, (N,) in the order of `pairs`."""
    same = np.array([p.same_answer for p in pairs])
    result = audit(cos[~same], cos[same], threshold, budget, embedder)
    by_kind: dict[str, tuple[int, int]] = {}
    for pair, c in zip(pairs, cos, strict=True):
        hits, n = by_kind.get(pair.kind, (0, 0))
        by_kind[pair.kind] = (hits + int(c >= result.threshold), n + 1)
    return AuditReport(result, by_kind)


def audited_semantic_cache(
    embed: Embedder, threshold: float | None = None, max_entries: int = 4096, per_kind: int = 500, seed: int = 0
) -> SemanticAnswerCache:
    """The way to turn a semantic cache on: audit `embed` on the seeded pairs here (threshold None: chosen by
    the false-hit budget), then build the cache, which raises SemanticCacheUnsafe with the measured rate
    when the audit fails. With MiniLM this takes minutes on a CPU (about 9,000 pairs)."""
    report = audit_pairs(embed, near_duplicate_pairs(per_kind, seed), threshold, embedder=type(embed).__name__)
    return SemanticAnswerCache(embed, report.audit, max_entries)


def _print(report: AuditReport, title: str) -> None:
    a = report.audit
    rates = f"false hits {a.false_hits}/{a.different_pairs} = {a.false_hit_rate:.3%}"
    para = f"paraphrase hits {a.paraphrase_hits}/{a.same_pairs} = {a.paraphrase_hit_rate:.1%}"
    print(f"{title}: threshold {a.threshold:.4f}  {rates}  {para}")
    for kind, (hits, n) in sorted(report.by_kind.items()):
        print(f"    {kind:26s} {hits:5d} / {n:5d} = {hits / n:7.2%}")


def main() -> None:
    from joulepath.serving.answer_cache import MiniLMEmbedder

    pairs, name = near_duplicate_pairs(), "all-MiniLM-L6-v2"
    cos = pair_cosines(MiniLMEmbedder(), [(p.a, p.b) for p in pairs])  # (N,)
    free = np.array([p.kind in ("negation", "free text reworded") for p in pairs])
    for title, keep in (("all pairs", np.ones_like(free)), ("free text only", free)):
        subset = [p for p, k in zip(pairs, keep, strict=True) if k]
        _print(audit_cosines(subset, cos[keep], embedder=name), f"{title}, chosen by the {FALSE_HIT_BUDGET:.1%} budget")
        for t in (0.9, 0.95, 0.99):
            _print(audit_cosines(subset, cos[keep], threshold=t, embedder=name), f"{title}, fixed")


if __name__ == "__main__":
    main()
