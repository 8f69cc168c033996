"""Undo the common ways a forbidden request is disguised from word rules, so the rules can read it:
leetspeak (`s4rin`, `r1c1n`, `@nthrax`), letters split by separators (`sa-rin`, `s.a.r.i.n`,
`n o v i c h o k`), accents and look-alike Cyrillic letters (`sаrin` with a Cyrillic `а`), and
invisible characters (zero-width spaces, soft hyphens).

Every variant keeps, for each of its characters, the index of the character it came from, so a rule
that fires on a variant still points at the right span of the original text.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

INVISIBLE = frozenset("\u00ad\u200b\u200c\u200d\u2060\ufeff")
# Cyrillic and Greek letters that render like Latin ones (a subset of Unicode's confusables).
LOOKALIKE = str.maketrans("аеорсхуіѕјԁɡοανκτ", "aeopcxyisjdgoavkt")
# Digits and symbols standing in for letters; "1" reads as "i" or "l", so both readings are tried.
LEET = {"4": "a", "@": "a", "3": "e", "!": "i", "0": "o", "5": "s", "$": "s", "7": "t"}
LEET_TOKEN = re.compile(r"[\w@$!]*[4@3!0$571][\w@$!]*")  # a word with a digit or symbol in it
IN_WORD_SEPARATOR = re.compile(r"(?<=[^\W\d_])[-.*_·•~^](?=[^\W\d_])")  # sa-rin, ri.cin, b*mb
SPACED_LETTERS = re.compile(r"(?<![^\W\d_])[^\W\d_](?:[\s.\-*_·•]{1,3}[^\W\d_](?![^\W\d_])){2,}")  # s a r i n
SPACE_OR_SEPARATOR = re.compile(r"[\s.\-*_·•]")


@dataclass(frozen=True)
class Variant:
    """A rewritten text and, per character, the index of the original character it came from."""

    text: str
    origin: tuple[int, ...]

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original text's span for this variant's non-empty [start, end)."""
        return self.origin[start], self.origin[end - 1] + 1


def _fold(text: str) -> Variant:
    """Drop invisible characters and accents; map look-alike letters to Latin."""
    if text.isascii():  # the usual case: nothing to fold
        return Variant(text, tuple(range(len(text))))
    chars: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        if ch in INVISIBLE:
            continue
        for c in unicodedata.normalize("NFKD", ch.translate(LOOKALIKE)):
            if not unicodedata.combining(c):
                chars.append(c)
                origin.append(i)
    return Variant("".join(chars), tuple(origin))


def _is_disguised_word(token: str) -> bool:
    """Mostly letters, at least two (`s4rin`, `r1c1n`), unlike keys and model names (`k8671`, `H100`)."""
    letters = sum(c.isalpha() for c in token)
    return letters >= 2 and letters >= sum(c in LEET or c == "1" for c in token)


def _unleet(v: Variant, one: str) -> Variant:
    """Read digits and symbols as letters inside words that are mostly letters (`s4rin`, not `2024`)."""
    chars = list(v.text)
    for m in LEET_TOKEN.finditer(v.text):
        token = m.group()
        if not _is_disguised_word(token):
            continue
        for k, c in enumerate(token):
            inner = k + 1 < len(token)  # a trailing "!" ends the sentence, it is not an "i"
            if c == "1":
                chars[m.start() + k] = one
            elif c in LEET and (c != "!" or inner):
                chars[m.start() + k] = LEET[c]
    return Variant("".join(chars), v.origin)


def _delete(v: Variant, doomed: set[int]) -> Variant:
    keep = [i for i in range(len(v.text)) if i not in doomed]
    return Variant("".join(v.text[i] for i in keep), tuple(v.origin[i] for i in keep))


def _join_split_words(v: Variant) -> Variant:
    """Remove separators inside words and between spaced-out single letters: `sa-rin`, `s a r i n`."""
    doomed = {m.start() for m in IN_WORD_SEPARATOR.finditer(v.text)}
    for m in SPACED_LETTERS.finditer(v.text):
        doomed |= {m.start() + s.start() for s in SPACE_OR_SEPARATOR.finditer(m.group())}
    return _delete(v, doomed) if doomed else v


def variants(text: str) -> list[Variant]:
    """The text as written, then each distinct de-obfuscated reading of it (usually none)."""
    found = [Variant(text, tuple(range(len(text))))]
    folded = _fold(text)
    for one in ("i", "l"):
        plain = _unleet(folded, one)
        for v in (plain, _join_split_words(plain)):
            if all(v.text != seen.text for seen in found):
                found.append(v)
    return found
