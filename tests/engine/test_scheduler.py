"""The scheduler's hand-off to the runner: frozen ScheduledChunks, one per sequence in the step."""

import dataclasses

import pytest

from joulepath.engine import Engine, EngineConfig, SamplingParams


def test_chunks_carry_position_tokens_and_whether_they_sample(tiny) -> None:  # type: ignore[no-untyped-def]
    engine = Engine(tiny, EngineConfig(max_tokens_per_step=8))
    engine.add_request([1] * 12, SamplingParams(max_tokens=2))
    first = engine.scheduler.schedule()
    assert [(c.start, len(c.token_ids), c.samples, c.draft_tokens) for c in first] == [(0, 8, False, ())]
    with pytest.raises(dataclasses.FrozenInstanceError):
        first[0].start = 1  # type: ignore[misc]
    first[0].seq.computed = first[0].end
    second = engine.scheduler.schedule()
    assert [(c.start, len(c.token_ids), c.samples) for c in second] == [(8, 4, True)]
