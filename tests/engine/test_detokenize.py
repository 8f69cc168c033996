"""Incremental detokenizing gives the text a whole-output decode gives (as the engine made it before),
token by token, with stop strings cut at the same place and never shown before they are cut."""

import random

import pytest

from joulepath.engine.detokenize import IncrementalDetokenizer, TextStage
from joulepath.engine.sampling import SamplingParams
from joulepath.model import load_model
from joulepath.model.tokenizer import ByteTokenizer, Tokenizer


def whole_output_text(tok: Tokenizer, ids: list[int], markers: tuple[int, ...], stop: tuple[str, ...]) -> str:
    """The text as the engine computed it before incremental detokenizing: decode every text id, cut at
    the earliest stop string."""
    text = tok.decode([i for i in ids if i not in markers])
    for s in stop:
        cut = text.find(s)
        if cut >= 0:
            text = text[:cut]
    return text


def stream(tok: Tokenizer, ids: list[int], markers: tuple[int, ...], stop: tuple[str, ...]) -> tuple[list[str], str]:
    d = IncrementalDetokenizer(tok, markers, stop)
    pieces = [d.add(i, last=k == len(ids) - 1) for k, i in enumerate(ids)]
    return pieces, d.text


@pytest.mark.parametrize("seed", range(40))
def test_bytes_with_broken_utf8_markers_and_stops_match_the_whole_decode(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = list(b"abc!?") + list("é€😀".encode()) + [0xFF, 0x80, 300, 7]  # 7: a marker, 300: no text
    ids = [rng.choice(alphabet) for _ in range(rng.randint(1, 60))]
    stop = rng.choice([(), ("!",), ("?a", "b!"), ("€a",)])
    pieces, text = stream(ByteTokenizer(), ids, (7,), stop)
    assert text == whole_output_text(ByteTokenizer(), ids, (7,), stop)
    assert "".join(pieces) == text  # what was shown is exactly the text: a stop string never leaked


def test_an_incomplete_character_is_held_until_it_is_complete() -> None:
    pieces, text = stream(ByteTokenizer(), list("a€b".encode()), (), ())
    assert pieces == ["a", "", "", "€", "b"] and text == "a€b"


def test_a_stop_string_split_across_tokens_is_held_back_then_cut() -> None:
    pieces, text = stream(ByteTokenizer(), list(b"xy<|end|>z"), (), ("<|end|>",))
    assert "".join(pieces) == text == "xy" and "<" not in "".join(pieces)


def test_zoo_tokenizer_outputs_match_the_whole_decode() -> None:
    loaded = load_model("jp-small")
    rng = random.Random(0)
    eos = loaded.config.eos_token_ids
    for _ in range(20):
        ids = [rng.randrange(loaded.tokenizer.vocab_size) for _ in range(rng.randint(1, 80))]
        pieces, text = stream(loaded.tokenizer, ids, eos, ("<|end|>", "\n\n"))
        assert text == whole_output_text(loaded.tokenizer, ids, eos, ("<|end|>", "\n\n")) == "".join(pieces)


def test_text_stage_treats_stop_ids_as_markers_and_reports_stops() -> None:
    stage = TextStage(ByteTokenizer(), eos_token_ids=(0,))
    stage.open("a", SamplingParams(stop_token_ids=(ord("!"),), stop=("cd",)))
    deltas = [stage.add("a", i, finished=False) for i in b"ab!c"]
    last = stage.add("a", ord("d"), finished=False)
    assert "".join(d.text for d in deltas) + last.text == "ab" and last.stopped and last.finished
    assert stage.pop("a") == "ab"
