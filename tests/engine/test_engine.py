import pytest
import torch

from joulepath.engine import ContextLengthError, Engine, EngineConfig, KVCacheFull, PagedKVCache, SamplingParams
from joulepath.engine.static_decode import generate_static
from joulepath.meter import Meter, ReplayBackend
from joulepath.model import preset

from .conftest import reference_greedy

TINY_BLOCK_BYTES = PagedKVCache.bytes_per_block(preset("tiny-llama"), 4, torch.float64)
PROMPTS = [[5, 6, 7], [9] * 40, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], [200, 100], [17] * 23]
GREEDY = SamplingParams(max_tokens=12, ignore_eos=True)


def test_kv_cache_blocks_and_slots(tiny) -> None:  # type: ignore[no-untyped-def]
    cache = PagedKVCache(tiny.config, n_blocks=4, block_size=4)
    cache.reserve(0, 6)
    assert cache.free_blocks == 2 and cache.tables[0] == [0, 1]
    assert cache.slots(0, 3, 3).tolist() == [3, 4, 5]
    with pytest.raises(KVCacheFull):
        cache.reserve(1, 13)
    assert cache.free_blocks == 2  # a failed reservation takes nothing
    cache.release(0)
    assert cache.free_blocks == 4


@pytest.mark.parametrize(
    "config",
    [
        EngineConfig(),
        EngineConfig(max_tokens_per_step=8),  # chunked prefill across many steps
        EngineConfig(kv_memory_bytes=TINY_BLOCK_BYTES * 24, block_size=4),  # 96 tokens for ~200 needed
    ],
    ids=["plain", "chunked", "preempting"],
)
def test_batched_greedy_equals_reference_exactly(tiny, config: EngineConfig) -> None:  # type: ignore[no-untyped-def]
    engine = Engine(tiny, config)
    outs = engine.generate(PROMPTS, GREEDY)
    for prompt, out in zip(PROMPTS, outs, strict=True):
        assert out.output_ids == reference_greedy(tiny, prompt, 12)
    if config.block_size == 4:
        assert sum(r.preemptions for r in engine.records) > 0  # the small pool forced recomputation


def test_sliding_window_model_matches_reference(tiny_mistral) -> None:  # type: ignore[no-untyped-def]
    engine = Engine(tiny_mistral, EngineConfig(max_tokens_per_step=7))
    prompt = list(range(3, 40))  # longer than the 16-token window
    assert engine.generate([prompt], GREEDY)[0].output_ids == reference_greedy(tiny_mistral, prompt, 12)


def test_static_batch1_path_matches_engine(tiny) -> None:  # type: ignore[no-untyped-def]
    prompt = PROMPTS[2]
    static = generate_static(tiny.model, prompt, GREEDY)
    assert static.output_ids == reference_greedy(tiny, prompt, 12)
    assert static.decode_tokens_per_s > 0


def test_seeded_sampling_does_not_depend_on_the_batch(tiny) -> None:  # type: ignore[no-untyped-def]
    params = SamplingParams(max_tokens=10, temperature=0.9, top_k=50, top_p=0.9, seed=7, ignore_eos=True)
    alone = Engine(tiny).generate([PROMPTS[0]], params)[0].output_ids
    together = Engine(tiny).generate([PROMPTS[1], PROMPTS[0], PROMPTS[3]], params)[1].output_ids
    assert alone == together
    other_seed = Engine(tiny).generate([PROMPTS[0]], SamplingParams(**{**params.__dict__, "seed": 8}))[0]
    assert other_seed.output_ids != alone


def test_top_k_one_is_greedy(tiny) -> None:  # type: ignore[no-untyped-def]
    params = SamplingParams(max_tokens=8, temperature=1.5, top_k=1, seed=0, ignore_eos=True)
    assert Engine(tiny).generate([PROMPTS[0]], params)[0].output_ids == reference_greedy(tiny, PROMPTS[0], 8)


def test_stop_strings_eos_and_max_tokens(tiny) -> None:  # type: ignore[no-untyped-def]
    engine = Engine(tiny)
    full = engine.generate(["abc"], GREEDY)[0]
    assert full.record.finish_reason == "length" and full.record.output_tokens == 12
    stop_at = full.text[3:5]
    if stop_at:
        cut = Engine(tiny).generate(["abc"], SamplingParams(max_tokens=12, stop=(stop_at,), ignore_eos=True))[0]
        assert cut.record.finish_reason == "stop" and stop_at not in cut.text
    eos = full.output_ids[2]
    stopped = Engine(tiny).generate(["abc"], SamplingParams(max_tokens=12, stop_token_ids=(eos,)))[0]
    first = full.output_ids.index(eos)
    assert stopped.output_ids == full.output_ids[: first + 1] and stopped.record.finish_reason == "stop"


def test_interactive_requests_go_first(tiny) -> None:  # type: ignore[no-untyped-def]
    engine = Engine(tiny, EngineConfig(max_batch=1))
    batch = [engine.add_request(p, GREEDY, priority="batch") for p in PROMPTS[:3]]
    urgent = engine.add_request(PROMPTS[3], GREEDY, priority="interactive")
    engine.run_until_done()
    order = [r.request_id for r in engine.records]
    assert order[0] == urgent and set(order[1:]) == set(batch)


def test_records_and_energy_conservation(tiny) -> None:  # type: ignore[no-untyped-def]
    windows = []

    class Recording(Meter):
        def end(self, name):  # type: ignore[no-untyped-def]
            m = super().end(name)
            windows.append(m)
            return m

    engine = Engine(tiny, meter=Recording([ReplayBackend({"gpu:0": 250.0})]))
    outs = engine.generate(PROMPTS, GREEDY)
    total = sum(o.record.energy_j for o in outs)
    assert total == pytest.approx(sum(w.total_energy_j for w in windows), rel=1e-9)
    for o in outs:
        r = o.record
        assert r.ttft_s > 0 and r.e2e_s >= r.ttft_s and r.tpot_s > 0 and r.energy_j > 0
        assert r.energy_provenance == "replay"


def test_streaming_yields_the_generated_text(tiny) -> None:  # type: ignore[no-untyped-def]
    engine = Engine(tiny)
    text = "".join(engine.stream("hi", GREEDY))
    assert text == Engine(tiny).generate(["hi"], GREEDY)[0].text


@pytest.mark.parametrize(
    ("prompt", "params", "message"),
    [
        ("", GREEDY, "empty prompt"),
        ([0, 999], GREEDY, "token ids must be in"),
        ([1] * 300, GREEDY, "exceeds the KV cache"),  # fits the context (512), not a 256-token cache
        ([1] * 512, GREEDY, "is 512 tokens, but dummy:tiny-llama's context is 512 tokens"),
    ],
)
def test_bad_requests_are_refused(tiny, prompt, params, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        Engine(tiny, EngineConfig(kv_memory_bytes=2**18)).add_request(prompt, params)


@pytest.mark.parametrize("model", ["tiny", "tiny_mistral"])
def test_prompt_longer_than_the_context_is_refused(model: str, request) -> None:  # type: ignore[no-untyped-def]
    loaded = request.getfixturevalue(model)  # Mistral's sliding window (16) does not lengthen its context (512)
    engine = Engine(loaded)
    with pytest.raises(ContextLengthError, match=r"is 600 tokens.*context is 512 tokens.*shorten it.*longer context"):
        engine.generate([[1] * 600], GREEDY)
    assert not engine.has_work()  # nothing was queued
    assert len(engine.generate([[1] * 511], SamplingParams(max_tokens=1))[0].output_ids) == 1


def test_max_tokens_is_capped_at_the_context_and_the_record_says_so(tiny) -> None:  # type: ignore[no-untyped-def]
    engine = Engine(tiny)
    capped, free = engine.generate([[1] * 500, [1] * 10], SamplingParams(max_tokens=64, ignore_eos=True))
    assert len(capped.output_ids) == 12 and capped.record.finish_reason == "length"
    assert capped.record.capped_max_tokens == 12 and capped.record.prompt_tokens + 12 == engine.context_tokens
    assert len(free.output_ids) == 64 and free.record.capped_max_tokens is None


def test_static_path_refuses_running_past_the_context(tiny) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ContextLengthError, match="lower max_tokens to at most 12"):
        generate_static(tiny.model, [1] * 500, SamplingParams(max_tokens=20))
    with pytest.raises(ContextLengthError, match="is 600 tokens"):
        generate_static(tiny.model, [1] * 600, SamplingParams(max_tokens=1))


@pytest.mark.parametrize("field", ["max_batch", "max_tokens_per_step", "block_size", "kv_memory_bytes"])
def test_engine_config_refuses_zero(field: str) -> None:  # max_batch = 0 used to loop forever
    with pytest.raises(ValueError, match=f"EngineConfig.{field} must be >= 1"):
        EngineConfig(**{field: 0})


def test_bad_sampling_params() -> None:
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams(max_tokens=0)
    with pytest.raises(ValueError, match="temperature must be a finite number"):
        SamplingParams(temperature=float("nan"))
