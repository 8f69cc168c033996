"""A suite of verifiable tasks: seeded generators of prompt/answer pairs whose answers can be checked
exactly, each skill at three difficulty levels, in one chat format.

Skills: multi-digit addition and multiplication, sorting, reversing a string, counting items,
comparing numbers, converting energy and power units, and key-value lookup in a long shared document
(many questions per document: the shape prefix caching feeds on).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal

SKILLS = ("add", "mul", "sort", "reverse", "count", "compare", "convert", "lookup")
LEVELS = ("easy", "medium", "hard")
SYSTEM_PROMPT = "You are a precise assistant. Answer with the result only."
SPECIAL_TOKENS = ("<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
CHAT_TEMPLATE = (  # with no system message, the suite's own is used (the models never saw a prompt without one)
    "{% if not messages or messages[0].role != 'system' %}<|system|>" + SYSTEM_PROMPT + "\n{% endif %}"
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass(frozen=True)
class Example:
    """One task instance. `document` is shared context (lookup); the prompt asks about it."""

    skill: str
    level: str
    question: str
    answer: str
    document: str = ""
    doc_id: str = ""

    @property
    def user_text(self) -> str:
        return f"{self.document}\n{self.question}" if self.document else self.question


def chat_prompt(example: Example, system: str = SYSTEM_PROMPT) -> str:
    """The prompt the model sees (rendered as CHAT_TEMPLATE renders it); the answer follows it."""
    return f"<|system|>{system}\n<|user|>{example.user_text}\n<|assistant|>"


def chat_target(example: Example) -> str:
    return f"{example.answer}<|end|>"


def _digits(rng: random.Random, n: int) -> int:
    return rng.randint(10 ** (n - 1) if n > 1 else 0, 10**n - 1)


ADD_DIGITS = {"easy": (1, 2), "medium": (3, 4), "hard": (6, 8)}
MUL_DIGITS = {"easy": (1, 1), "medium": (2, 2), "hard": (3, 3)}
LIST_LEN = {"easy": 3, "medium": 5, "hard": 8}
LIST_MAX = {"easy": 9, "medium": 99, "hard": 999}
STRING_LEN = {"easy": (3, 4), "medium": (6, 8), "hard": (12, 16)}
COUNT_LEN = {"easy": 5, "medium": 10, "hard": 20}
LOOKUP_LINES = {"easy": 12, "medium": 40, "hard": 100}  # ~130 to ~1,100 tokens with one token per digit
UNITS_J = {"J": Decimal(1), "Wh": Decimal(3600), "kWh": Decimal(3_600_000), "MWh": Decimal(3_600_000_000)}
UNITS_W = {"W": Decimal(1), "kW": Decimal(1000), "MW": Decimal(1_000_000)}


def _fmt(d: Decimal) -> str:
    """Canonical decimal: no exponent, no trailing zeros."""
    text = format(d.normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def gen_add(rng: random.Random, level: str) -> Example:
    lo, hi = ADD_DIGITS[level]
    a, b = _digits(rng, rng.randint(lo, hi)), _digits(rng, rng.randint(lo, hi))
    return Example("add", level, f"What is {a} + {b}?", str(a + b))


def gen_mul(rng: random.Random, level: str) -> Example:
    lo, hi = MUL_DIGITS[level]
    a, b = _digits(rng, rng.randint(lo, hi)), _digits(rng, rng.randint(lo, hi))
    return Example("mul", level, f"What is {a} * {b}?", str(a * b))


def gen_sort(rng: random.Random, level: str) -> Example:
    xs = [rng.randint(0, LIST_MAX[level]) for _ in range(LIST_LEN[level])]
    return Example("sort", level, f"Sort ascending: {', '.join(map(str, xs))}", ", ".join(map(str, sorted(xs))))


def gen_reverse(rng: random.Random, level: str) -> Example:
    """Letters written apart ("Reverse: k e x a" -> "a x e k"): a BPE tokenizer would merge random
    letter runs differently forwards and backwards, so the task would test tokenization, not reversal."""
    letters = [rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(*STRING_LEN[level]))]
    return Example("reverse", level, f"Reverse: {' '.join(letters)}", " ".join(reversed(letters)))


def gen_count(rng: random.Random, level: str) -> Example:
    items = [rng.choice(["apple", "pear", "fig", "plum"]) for _ in range(COUNT_LEN[level])]
    target = rng.choice(items)
    return Example(
        "count", level, f"How many times does {target} appear in: {' '.join(items)}?", str(items.count(target))
    )


def gen_compare(rng: random.Random, level: str) -> Example:
    if level == "hard":  # close decimals: 3.14 vs 3.141
        base = Decimal(rng.randint(100, 999)) / 100
        a, b = base, base + Decimal(rng.randint(1, 9)) / 1000
    else:
        n = 2 if level == "easy" else 4
        a, b = Decimal(_digits(rng, n)), Decimal(_digits(rng, n))
        while a == b:
            b = Decimal(_digits(rng, n))
    if rng.random() < 0.5:
        a, b = b, a
    return Example("compare", level, f"Which is larger: {_fmt(a)} or {_fmt(b)}?", _fmt(max(a, b)))


def gen_convert(rng: random.Random, level: str) -> Example:
    """Unit conversion with an exact answer: when converting up, the answer is drawn first."""
    table = UNITS_J if rng.random() < 0.5 else UNITS_W
    names = list(table)
    if level == "easy":  # neighbouring units
        i = rng.randrange(len(names) - 1)
        src, dst = (names[i], names[i + 1]) if rng.random() < 0.5 else (names[i + 1], names[i])
    else:
        src, dst = rng.sample(names, 2)
    scale = Decimal(10) if level == "hard" else Decimal(1)  # hard: one decimal place
    top = 9 if level == "easy" else 999
    ratio = table[src] / table[dst]
    if ratio >= 1:
        value = Decimal(rng.randint(1, top)) / scale
        result = value * ratio
    else:
        result = Decimal(rng.randint(1, top)) / scale
        value = result / ratio
    return Example("convert", level, f"Convert {_fmt(value)} {src} to {dst}.", _fmt(result))


def make_document(
    rng: random.Random, level: str, doc_id: str, lines: int | None = None, key_digits: int = 4
) -> tuple[str, dict[str, str]]:
    """A lookup document of `lines` key-value lines (default: the level's, `LOOKUP_LINES`), keys "k" and
    `key_digits` digits (the golden sets' 4 by default; fewer only in training data)."""
    if not 1 <= key_digits <= 9:
        raise ValueError(f"key_digits must be 1-9 (the golden sets use 4), got {key_digits}")
    n = lines or LOOKUP_LINES[level]
    space = range(10 ** (key_digits - 1), 10**key_digits)
    if n > len(space):
        raise ValueError(f"{n} distinct keys of {key_digits} digits do not exist: use more digits or fewer lines")
    keys = rng.sample(space, n)
    values = {f"k{k}": str(rng.randint(0, 999)) for k in keys}
    return "\n".join(f"{k}: {v}" for k, v in values.items()), values


def gen_lookup(rng: random.Random, level: str, document: tuple[str, dict[str, str], str] | None = None) -> Example:
    text, values, doc_id = document or (*make_document(rng, level, "doc"), "doc")
    key = rng.choice(list(values))
    return Example("lookup", level, f"What is the value of {key}?", values[key], text, doc_id)


GENERATORS = {
    "add": gen_add,
    "mul": gen_mul,
    "sort": gen_sort,
    "reverse": gen_reverse,
    "count": gen_count,
    "compare": gen_compare,
    "convert": gen_convert,
}


def generate(skill: str, level: str, rng: random.Random) -> Example:
    """One example of `skill` at `level` (lookup makes its own one-off document)."""
    if skill not in SKILLS or level not in LEVELS:
        raise ValueError(f"unknown skill/level {skill}/{level}; skills: {SKILLS}, levels: {LEVELS}")
    if skill == "lookup":
        return gen_lookup(rng, level)
    return GENERATORS[skill](rng, level)


def check(example: Example, output: str) -> bool:
    """Exact match after trimming whitespace and the end marker."""
    return output.replace("<|end|>", "").strip() == example.answer
