"""Answer caches: reuse a previous request's answer instead of running the engine again.

Two kinds behind one interface (`lookup` / `store` on an `AnswerQuery`):

- `ExactAnswerCache` (the safe default): the key is the model, the whole prompt with its whitespace
  normalised, and every sampling parameter that changes the output. Only deterministic requests
  (greedy: temperature 0) are cached, so a hit returns exactly what the engine would have produced.
- `SemanticAnswerCache`: sentence embeddings of the user's words (the guardrails' offline MiniLM, see
  `serving/semantic.py`) and an exact nearest-neighbour search (cosine over a numpy matrix: a full scan,
  not an approximate index; at a few thousand entries the scan is cheaper than building one). A
  neighbour above the threshold answers. Semantic caches are known to answer the opposite question
  ("is X safe" vs "is X not safe" embed at 0.83-0.99 cosine), so this one refuses to exist unless a
  `CacheAudit` on near-duplicate pairs with different answers (`serving/near_duplicates.py`) measured
  a false-hit rate at or under `FALSE_HIT_BUDGET` at its threshold.

Measured with MiniLM (`python -m joulepath.serving.near_duplicates`, seed 0: 4,303 different-answer and
4,278 same-answer pairs): the budget picks cosine 0.9988, where 4 different-answer pairs still hit
(0.093 %, all two letters swapped in a reversal: 0.8 % of those pairs) and 0.4 % of true paraphrases hit
(19, of them 18 a sort list in another order). At 0.9 (a usual setting) 77 % of different-answer pairs
hit: "What is 4162 + 9954?" vs "+ 9953", "Is it safe to X?" vs "Is it not safe to X?" (every negation pair
is above 0.9; the highest is 0.9986). So it passes the gate only where it is no better than exact
matching: the frontend's default is no cache, and `ExactAnswerCache` is the one to turn on.

The frontend looks a request up after the input guard (a cached answer never skips the guard) and
stores the answer once the request finishes:

    >>> from joulepath.engine import SamplingParams
    >>> cache = ExactAnswerCache(max_entries=2)
    >>> q = AnswerQuery("jp-large", "What is 2 + 2?", None, SamplingParams(max_tokens=4))
    >>> cache.store(q, CachedAnswer("4", (19,), prompt_tokens=9, finish_reason="stop"))
    >>> cache.lookup(AnswerQuery("jp-large", "What is  2 + 2? ", None, SamplingParams(max_tokens=4))).text
    '4'
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from joulepath.engine import SamplingParams

FALSE_HIT_BUDGET = 0.001  # the most a semantic cache may answer a different question, as a share of audited pairs
MIN_AUDIT_PAIRS = 1000  # fewer pairs cannot resolve a 0.1 % rate
CACHEABLE_FINISH = ("stop", "length")  # an aborted or failed request is not an answer


class Embedder(Protocol):
    """Sentence embeddings for a semantic cache."""

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length rows, (N, D)."""
        ...

    def fits(self, text: str) -> bool:
        """Whether the whole text is inside the model's window. One that is not is never looked up: its
        tail would be cut off, and two long prompts that differ only there would embed identically."""
        ...


@dataclass(frozen=True)
class AnswerQuery:
    """What identifies an answer: the model, the prompt the engine would see, the user's words inside
    it (None: the whole prompt is theirs), and the sampling parameters."""

    model_id: str
    prompt: str | tuple[int, ...]
    user_text: str | None
    params: SamplingParams

    @property
    def deterministic(self) -> bool:
        """Greedy decoding: the same prompt always gives the same answer (top-k, top-p, seed unused)."""
        return self.params.greedy

    def exact_key(self) -> tuple[object, ...]:
        return (self.model_id, _normalise(self.prompt), _output_params(self.params))

    def context_key(self) -> tuple[object, ...]:
        """Everything but the user's words: a semantic match is only looked for under the same model,
        system prompt, chat template and parameters."""
        context = self.prompt
        if isinstance(context, str) and self.user_text is not None:
            context = context.replace(self.user_text, "\x00")
        elif isinstance(context, str):
            context = "\x00"
        return (self.model_id, _normalise(context), _output_params(self.params))

    @property
    def text(self) -> str | None:
        """The words a semantic cache embeds (None: a token-id prompt, which has none)."""
        if self.user_text is not None:
            return self.user_text
        return self.prompt if isinstance(self.prompt, str) else None


@dataclass(frozen=True)
class CachedAnswer:
    """A finished answer as the frontend returns it again."""

    text: str  # after the output guard
    output_ids: tuple[int, ...]
    prompt_tokens: int
    finish_reason: str


class AnswerCache(Protocol):
    """What the frontend needs from a cache."""

    hits: int
    misses: int

    def lookup(self, query: AnswerQuery) -> CachedAnswer | None: ...

    def store(self, query: AnswerQuery, answer: CachedAnswer) -> None: ...


def _normalise(prompt: str | tuple[int, ...]) -> str | tuple[int, ...]:
    """Runs of whitespace to one space, ends trimmed; token ids as they are."""
    return " ".join(prompt.split()) if isinstance(prompt, str) else prompt


def _output_params(params: SamplingParams) -> tuple[object, ...]:
    """The parameters that change a greedy answer (temperature, top-k, top-p and seed do not)."""
    return (params.max_tokens, params.stop, params.stop_token_ids, params.ignore_eos)


class ExactAnswerCache:
    """Exact-match answers for greedy requests, least recently used evicted past `max_entries`."""

    def __init__(self, max_entries: int = 4096) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self.hits = self.misses = 0
        self._entries: OrderedDict[tuple[object, ...], CachedAnswer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, query: AnswerQuery) -> CachedAnswer | None:
        if not query.deterministic:
            return None  # not counted: such a request is never a candidate
        key = query.exact_key()
        answer = self._entries.get(key)
        if answer is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return answer

    def store(self, query: AnswerQuery, answer: CachedAnswer) -> None:
        if not query.deterministic or answer.finish_reason not in CACHEABLE_FINISH:
            return
        self._entries[query.exact_key()] = answer
        self._entries.move_to_end(query.exact_key())
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


@dataclass(frozen=True)
class CacheAudit:
    """A semantic cache's threshold measured on near-duplicate pairs.

    false_hit_rate: share of different-answer pairs whose cosine reaches the threshold (each would be
    served the other's answer); paraphrase_hit_rate: share of same-answer pairs that reach it."""

    threshold: float  # cosine; above 1.0: no threshold meets the budget (nothing would ever hit)
    different_pairs: int
    false_hits: int
    same_pairs: int
    paraphrase_hits: int
    embedder: str

    @property
    def false_hit_rate(self) -> float:
        return self.false_hits / self.different_pairs if self.different_pairs else 1.0

    @property
    def paraphrase_hit_rate(self) -> float:
        return self.paraphrase_hits / self.same_pairs if self.same_pairs else 0.0


class SemanticCacheUnsafe(RuntimeError):
    """A semantic cache whose audit does not meet the false-hit budget; it stays off."""


def pair_cosines(embed: Embedder, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    """Cosine of each (a, b) pair, (N,), as the cache sees it: -1 (never a hit) where a text does not
    fit the embedder's window. Texts are embedded once each."""
    texts = sorted({t for pair in pairs for t in pair})
    index = {t: k for k, t in enumerate(texts)}
    vectors = np.asarray(embed(texts), dtype=np.float32)  # (T, D), unit rows
    a = vectors[[index[p[0]] for p in pairs]]  # (N, D)
    b = vectors[[index[p[1]] for p in pairs]]  # (N, D)
    fits = {t: embed.fits(t) for t in texts}
    both_fit = np.array([fits[p[0]] and fits[p[1]] for p in pairs])
    return np.where(both_fit, np.einsum("nd,nd->n", a, b), -1.0)


def audit(
    different: np.ndarray,
    same: np.ndarray,
    threshold: float | None = None,
    budget: float = FALSE_HIT_BUDGET,
    embedder: str = "",
) -> CacheAudit:
    """Measure a threshold on pair cosines (`different`: pairs with different answers, `same`: with the
    same answer). threshold None: the lowest one whose false-hit rate is within `budget`."""
    if threshold is None:
        allowed = int(budget * len(different))  # false hits the budget tolerates
        ranked = np.sort(different)[::-1]
        # Just above the (allowed+1)-th highest different-answer cosine: at most `allowed` reach it.
        threshold = (
            float(np.nextafter(np.float32(ranked[allowed]), np.float32(np.inf))) if allowed < len(ranked) else -1.0
        )
    false_hits, paraphrase_hits = int((different >= threshold).sum()), int((same >= threshold).sum())
    return CacheAudit(threshold, len(different), false_hits, len(same), paraphrase_hits, embedder)


class SemanticAnswerCache:
    """Answers of earlier greedy requests whose user text embeds within `audit.threshold` cosine of the
    new one, under the same context (model, rest of the prompt, parameters). Raises SemanticCacheUnsafe
    unless `audit` measured a false-hit rate within `budget` on at least MIN_AUDIT_PAIRS pairs."""

    def __init__(
        self, embed: Embedder, audit: CacheAudit, max_entries: int = 4096, budget: float = FALSE_HIT_BUDGET
    ) -> None:
        if audit.false_hit_rate > budget:
            raise SemanticCacheUnsafe(
                f"semantic cache stays off: measured false-hit rate {audit.false_hit_rate:.2%} "
                f"({audit.false_hits} of {audit.different_pairs} different-answer pairs) at cosine threshold "
                f"{audit.threshold:.4f} is above the {budget:.1%} budget"
            )
        if audit.different_pairs < MIN_AUDIT_PAIRS:
            raise SemanticCacheUnsafe(
                f"semantic cache stays off: the audit has {audit.different_pairs} different-answer pairs; "
                f"{MIN_AUDIT_PAIRS} are needed to resolve a {budget:.1%} false-hit budget"
            )
        if audit.threshold > 1.0:
            raise SemanticCacheUnsafe(
                "semantic cache stays off: no cosine threshold meets the false-hit budget (different-answer pairs "
                "embed identically); it would never hit"
            )
        self.embed, self.audit, self.max_entries = embed, audit, max_entries
        self.hits = self.misses = 0
        self._keys: list[tuple[tuple[object, ...], str]] = []  # (context key, text) per row, oldest first
        self._answers: list[CachedAnswer] = []
        self._vectors = np.zeros((0, 0), dtype=np.float32)  # (N, D) unit rows

    def __len__(self) -> int:
        return len(self._answers)

    def lookup(self, query: AnswerQuery) -> CachedAnswer | None:
        text = query.text
        if not query.deterministic or text is None or not self.embed.fits(text):
            return None
        context = query.context_key()
        rows = [k for k, (ctx, _) in enumerate(self._keys) if ctx == context]
        if rows:
            cosines = self._vectors[rows] @ self._embed_one(text)  # (R,)
            best = int(np.argmax(cosines))
            if cosines[best] >= self.audit.threshold:
                self.hits += 1
                return self._answers[rows[best]]
        self.misses += 1
        return None

    def store(self, query: AnswerQuery, answer: CachedAnswer) -> None:
        text = query.text
        if not query.deterministic or text is None or answer.finish_reason not in CACHEABLE_FINISH:
            return
        if not self.embed.fits(text):
            return
        vector = self._embed_one(text)[None, :]  # (1, D)
        self._vectors = vector if len(self._answers) == 0 else np.concatenate([self._vectors, vector])
        self._keys.append((query.context_key(), text))
        self._answers.append(answer)
        if len(self._answers) > self.max_entries:  # oldest out (first in, first out)
            self._vectors, self._keys, self._answers = self._vectors[1:], self._keys[1:], self._answers[1:]

    def _embed_one(self, text: str) -> np.ndarray:
        return np.asarray(self.embed([text]), dtype=np.float32)[0]  # (D,)


class MiniLMEmbedder:
    """The guardrails' offline all-MiniLM-L6-v2 (serving/semantic.py); loads on construction, so a missing
    package raises EmbedderUnavailable here and not at the first request. Its window: 256 word pieces."""

    def __init__(self) -> None:
        from joulepath.serving.semantic import _embedder

        self.model = _embedder()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        from joulepath.serving.semantic import embed

        return embed(texts).numpy()  # (N, 384)

    def fits(self, text: str) -> bool:
        return len(self.model.tokenizer(text, verbose=False)["input_ids"]) <= self.model.max_seq_length
