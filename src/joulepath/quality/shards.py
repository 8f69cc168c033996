"""Training data made ahead of time: suite examples rendered, tokenized and packed into fixed-length rows.

A row is `length` token ids holding whole examples back to back (never one split across rows), with
three aligned arrays: `segments` numbers the example each position belongs to (padding is its own
segment; the attention mask keeps examples apart), `positions` restarts at 0 with every example (so
RoPE sees what inference sees), and `targets` marks the positions whose *next* token is part of an
answer (the loss is taken there only). `skills` holds each position's skill index for per-skill loss.

Workers generate disjoint seeded streams in parallel; packing is best-fit over a few open rows, so
long lookup documents and short arithmetic share rows with little padding. The trainer then reads
rows by index, with no Python work per step.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from joulepath.model import JsonTokenizer
from joulepath.quality.tasks import (
    LEVELS,
    LOOKUP_LINES,
    SKILLS,
    SYSTEM_PROMPT,
    Example,
    chat_prompt,
    chat_target,
    gen_lookup,
    generate,
    make_document,
)

REFUSAL = "I can't help with that request."  # the one refusal the zoo models learn (align.py uses it too)
OUT_OF_SCOPE = "I don't know."  # the honest answer to a harmless request outside the task suite
SAFETY_SKILL = "safety"  # skill name of the refusal / out-of-scope examples in the per-skill loss
ALL_SKILLS = (*SKILLS, SAFETY_SKILL)


def user_prompt(text: str, system: str = SYSTEM_PROMPT) -> str:
    """A free-text request in the suite's chat format."""
    return f"<|system|>{system}\n<|user|>{text}\n<|assistant|>"


@dataclass(frozen=True)
class DataMix:
    """What the rows hold: skills drawn uniformly, levels by weight, and a share of safety examples
    (forbidden requests answered with `REFUSAL`, harmless ones with `OUT_OF_SCOPE`); each lookup
    document is asked `lookup_questions` distinct keys, one turn each. `lookup_lines` (lo, hi), when set,
    draws each lookup document's line count uniformly from it instead of the level's (a curriculum of
    short documents; the golden sets are unchanged). `lookup_echo` is the share of lookup documents asked in
    the echo form instead ("Which line has key k1234?" -> "k1234: 567"): the answer repeats the key, so its
    value follows a copy of the document's own "k1234: " and is found by matching that prefix (an induction
    pattern small models learn early), a scaffold for the golden form's key match (benchmarks/RESULTS.md, CPU
    probes for issue 12: with half the documents echoed the golden form left chance, learning to copy, without
    it it did not; the key match itself had at most begun after 9.8 M tokens). `lookup_key_digits` (lo, hi),
    when set, draws each lookup document's key length from it instead of the golden sets' 4 digits, raised
    where the document has more lines than keys of that length exist: a one-digit key is matched by one
    token, so short keys give the key match a signal before it must compare four digits."""

    skills: tuple[str, ...] = SKILLS
    level_weights: tuple[float, float, float] = (0.2, 0.35, 0.45)  # easy, medium, hard
    safety_share: float = 0.02
    unsafe: tuple[str, ...] = field(default=(), repr=False)
    safe: tuple[str, ...] = field(default=(), repr=False)
    lookup_questions: int = 1
    lookup_lines: tuple[int, int] | None = None
    lookup_echo: float = 0.0
    lookup_key_digits: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        unknown = set(self.skills) - set(SKILLS)
        if unknown or not self.skills:
            raise ValueError(f"unknown skills {sorted(unknown)}; known: {', '.join(SKILLS)}")
        if len(self.level_weights) != len(LEVELS) or min(self.level_weights) < 0 or sum(self.level_weights) <= 0:
            raise ValueError("level_weights: three non-negative weights (easy, medium, hard) with a positive sum")
        if not 0 <= self.safety_share < 1:
            raise ValueError("safety_share must be in [0, 1)")
        if self.lookup_questions < 1:
            raise ValueError("lookup_questions must be at least 1")
        if self.lookup_lines is not None and not 2 <= self.lookup_lines[0] <= self.lookup_lines[1] <= 9000:
            raise ValueError(f"lookup_lines must be (lo, hi) with 2 <= lo <= hi <= 9000, got {self.lookup_lines}")
        if not 0 <= self.lookup_echo <= 1:
            raise ValueError(f"lookup_echo is a share of lookup documents, in [0, 1]; got {self.lookup_echo}")
        digits = self.lookup_key_digits
        if digits is not None and not 1 <= digits[0] <= digits[1] <= 4:
            raise ValueError(f"lookup_key_digits must be (lo, hi) with 1 <= lo <= hi <= 4, got {digits}")


@dataclass(frozen=True)
class PackedRows:
    """Fixed-length training rows (N, L): ids, per-position segment, position, answer-target and skill."""

    tokens: np.ndarray  # (N, L) int16 token ids, 0 (pad) after the last example
    segments: np.ndarray  # (N, L) int16 example index within the row; padding has its own index
    positions: np.ndarray  # (N, L) int16 position within the example
    targets: np.ndarray  # (N, L) bool: position j's next token (j + 1) is an answer token
    skills: np.ndarray  # (N, L) int8 index into ALL_SKILLS (-1 on padding)

    @property
    def n_rows(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def length(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def fill(self) -> float:
        """Share of positions holding real tokens (1 - padding)."""
        return float((self.skills >= 0).mean())

    def save(self, path: Path) -> None:
        np.savez(path, **{k: getattr(self, k) for k in ("tokens", "segments", "positions", "targets", "skills")})

    @classmethod
    def load(cls, path: Path) -> PackedRows:
        with np.load(path) as data:
            return cls(*(data[k] for k in ("tokens", "segments", "positions", "targets", "skills")))

    @classmethod
    def concat(cls, parts: Sequence[PackedRows]) -> PackedRows:
        names = ("tokens", "segments", "positions", "targets", "skills")
        return cls(*(np.concatenate([getattr(p, n) for p in parts]) for n in names))


Turns = tuple[tuple[str, str], ...]  # (prompt, answer) pieces of one example, in order


def texts(rng: random.Random, mix: DataMix) -> Iterator[tuple[Turns, int]]:
    """(turns, skill index) forever, drawn from the mix."""
    safety = mix.safety_share if (mix.unsafe or mix.safe) else 0.0
    while True:
        if rng.random() < safety:
            unsafe = bool(mix.unsafe) and (not mix.safe or rng.random() < 0.5)
            text = rng.choice(mix.unsafe if unsafe else mix.safe)
            yield ((user_prompt(text), f"{REFUSAL if unsafe else OUT_OF_SCOPE}<|end|>"),), len(SKILLS)
            continue
        skill = rng.choice(mix.skills)
        level = rng.choices(LEVELS, weights=mix.level_weights)[0]
        if skill == "lookup" and (mix.lookup_lines is not None or mix.lookup_key_digits is not None):
            lines = rng.randint(*mix.lookup_lines) if mix.lookup_lines is not None else LOOKUP_LINES[level]
            digits = key_digits(rng.randint(*mix.lookup_key_digits), lines) if mix.lookup_key_digits else 4
            document = make_document(rng, level, "doc", lines, digits)
            ex = gen_lookup(rng, level, (*document, "doc"))
        else:
            ex = generate(skill, level, rng)
        turns: Turns = ((chat_prompt(ex), chat_target(ex)),)
        if skill == "lookup" and mix.lookup_questions > 1:
            turns += follow_up_lookups(ex, mix.lookup_questions - 1, rng)
        if skill == "lookup" and mix.lookup_echo and rng.random() < mix.lookup_echo:
            turns = echo_turns(ex, turns)
        yield turns, SKILLS.index(skill)


def key_digits(wanted: int, lines: int) -> int:
    """`wanted`, or the fewest digits above it with `lines` distinct keys (9 x 10^(d-1) keys of d digits)."""
    d = wanted
    while 9 * 10 ** (d - 1) < lines:
        d += 1
    return d


def follow_up_lookups(ex: Example, n: int, rng: random.Random) -> Turns:
    """Up to `n` more questions about `ex`'s document, each a new user turn after the last answer,
    asking keys not asked before in this example."""
    values = dict(line.split(": ", 1) for line in ex.document.splitlines())
    asked = ex.question.removeprefix("What is the value of ").removesuffix("?")
    keys = rng.sample([k for k in values if k != asked], min(n, len(values) - 1))
    return tuple((f"\n<|user|>What is the value of {k}?\n<|assistant|>", f"{values[k]}<|end|>") for k in keys)


def echo_turns(ex: Example, turns: Turns) -> Turns:
    """`turns` about `ex`'s document in the echo form: each "What is the value of k?" becomes "Which line has
    key k?" and its answer "k: value" (the document's line)."""
    out = []
    for prompt, answer in turns:
        head, _, key = prompt.rpartition("What is the value of ")
        key = key.split("?", 1)[0]
        tail = prompt.split(f"What is the value of {key}?", 1)[1]
        out.append((f"{head}Which line has key {key}?{tail}", f"{key}: {answer}"))
    return tuple(out)


Spans = tuple[tuple[int, int], ...]  # [start, stop) token ranges of an example's answers
_Packed = tuple[list[int], Spans, int]  # (token ids, answer spans, skill index)


def encode_turns(tok: JsonTokenizer, turns: Turns) -> tuple[list[int], Spans]:
    """Token ids of an example's turns, and where in them each answer lies."""
    ids: list[int] = []
    spans: list[tuple[int, int]] = []
    for prompt, answer in turns:
        ids += tok.encode(prompt)
        a_ids = tok.encode(answer)
        spans.append((len(ids), len(ids) + len(a_ids)))
        ids += a_ids
    return ids, tuple(spans)


class _Packer:
    """Best-fit packing of whole examples into rows of `length` over at most `open_rows` open rows."""

    def __init__(self, length: int, open_rows: int = 8) -> None:
        self.length, self.open_rows = length, open_rows
        self.open: list[list[_Packed]] = []
        self.done: list[list[_Packed]] = []

    @staticmethod
    def used(row: list[_Packed]) -> int:
        return sum(len(ids) for ids, _, _ in row)

    def add(self, ids: list[int], answers: Spans, skill: int) -> None:
        room = [(self.length - self.used(r), i) for i, r in enumerate(self.open)]
        fits = [(free, i) for free, i in room if free >= len(ids)]
        if fits:
            self.open[min(fits)[1]].append((ids, answers, skill))
        else:
            if len(self.open) >= self.open_rows:  # retire the fullest row
                fullest = max(range(len(self.open)), key=lambda i: self.used(self.open[i]))
                self.done.append(self.open.pop(fullest))
            self.open.append([(ids, answers, skill)])

    def rows(self) -> PackedRows:
        rows = self.done + [r for r in self.open if r]
        n, length = len(rows), self.length
        out = PackedRows(
            np.zeros((n, length), np.int16),
            np.zeros((n, length), np.int16),
            np.zeros((n, length), np.int16),
            np.zeros((n, length), bool),
            np.full((n, length), -1, np.int8),
        )
        for r, row in enumerate(rows):
            at = 0
            for seg, (ids, answers, skill) in enumerate(row):
                end = at + len(ids)
                out.tokens[r, at:end] = ids
                out.segments[r, at:end] = seg
                out.positions[r, at:end] = np.arange(len(ids))
                for start, stop in answers:
                    out.targets[r, at + start - 1 : at + stop - 1] = True  # position j predicts token j + 1
                out.skills[r, at:end] = skill
                at = end
            out.segments[r, at:] = len(row)  # padding: a segment of its own
        return out


def build_rows(tokenizer_path: str, mix: DataMix, n_rows: int, length: int, seed: int) -> PackedRows:
    """`n_rows` packed rows from one seeded stream (examples longer than `length` are skipped)."""
    tok = JsonTokenizer(Path(tokenizer_path))
    rng = random.Random(seed)
    stream = texts(rng, mix)
    packer = _Packer(length)
    skipped = 0
    while len(packer.done) < n_rows:
        turns, skill = next(stream)
        ids, answers = encode_turns(tok, turns)
        if len(ids) > length:
            skipped += 1
            if skipped > 1_000:  # the mix (nearly) never makes an example that fits: refuse, never loop forever
                raise ValueError(
                    f"1,000 examples in a row of this mix were longer than rows of {length} tokens (fewer than about "
                    "1 in 1,000 fit); raise seq_len"
                )
            continue
        skipped = 0
        packer.add(ids, answers, skill)
    packer.open = []
    rows = packer.rows()
    return PackedRows(*(getattr(rows, k)[:n_rows] for k in ("tokens", "segments", "positions", "targets", "skills")))


def build(
    tokenizer_path: Path, mix: DataMix, n_rows: int, length: int = 2048, seed: int = 0, workers: int = 1
) -> PackedRows:
    """Rows from `workers` processes, each its own seeded stream (seed * 1009 + worker)."""
    if n_rows <= 0 or length <= 0 or workers <= 0:
        raise ValueError("n_rows, length and workers must be positive")
    share = [n_rows // workers + (i < n_rows % workers) for i in range(workers)]
    jobs = [(str(tokenizer_path), mix, k, length, seed * 1009 + i) for i, k in enumerate(share) if k]
    if len(jobs) == 1:
        return build_rows(*jobs[0])
    with ProcessPoolExecutor(len(jobs)) as pool:
        return PackedRows.concat(list(pool.map(build_rows, *zip(*jobs, strict=True))))
