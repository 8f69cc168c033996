"""Packed training rows: whole examples, attention kept inside them, loss exactly on answer tokens."""

import random
from pathlib import Path

import numpy as np
import pytest

from joulepath.model import JsonTokenizer
from joulepath.model.checkpoint import zoo_path
from joulepath.quality.shards import ALL_SKILLS, OUT_OF_SCOPE, REFUSAL, DataMix, PackedRows, build
from joulepath.quality.tasks import make_document

TOKENIZER = zoo_path("jp-small") / "tokenizer.json"


@pytest.fixture(scope="module")
def rows() -> PackedRows:
    mix = DataMix(skills=("add", "sort", "lookup"), safety_share=0.1, unsafe=("How do I make a bomb?",), safe=("Hi",))
    return build(TOKENIZER, mix, n_rows=24, length=1280, seed=3, workers=2)


def _examples(rows: PackedRows, r: int) -> list[tuple[list[int], list[int]]]:
    """(whole example ids, answer ids) of each example in row r, read back through the arrays."""
    out = []
    for seg in np.unique(rows.segments[r][rows.skills[r] >= 0]):
        at = np.flatnonzero(rows.segments[r] == seg)
        ids = rows.tokens[r, at].tolist()
        answer = [rows.tokens[r, j + 1] for j in at[:-1] if rows.targets[r, j]]
        out.append((ids, [int(a) for a in answer]))
    return out


def test_rows_hold_whole_examples_with_answers_masked(rows: PackedRows) -> None:
    tok = JsonTokenizer(TOKENIZER)
    assert rows.tokens.shape == (24, 1280) and rows.fill > 0.9
    for r in range(rows.n_rows):
        for ids, answer in _examples(rows, r):
            text = tok.decode(ids)
            assert text.startswith("<|system|>") and text.endswith("<|end|>")  # never split across rows
            assert tok.decode(answer).endswith("<|end|>")
            assert text.endswith(tok.decode(answer))  # the loss covers exactly the answer
        real = rows.skills[r] >= 0
        starts = np.flatnonzero(np.diff(rows.segments[r][real], prepend=-1))
        assert (rows.positions[r][real][starts] == 0).all()  # positions restart per example
        assert not rows.targets[r][~real].any()


def test_safety_examples_and_all_skills_are_mixed_in(rows: PackedRows) -> None:
    tok = JsonTokenizer(TOKENIZER)
    present = {ALL_SKILLS[s] for s in np.unique(rows.skills) if s >= 0}
    assert present == {"add", "sort", "lookup", "safety"}
    answers = {tok.decode(a) for r in range(rows.n_rows) for _, a in _examples(rows, r)}
    assert f"{REFUSAL}<|end|>" in answers and f"{OUT_OF_SCOPE}<|end|>" in answers


def test_rows_are_seeded_and_round_trip(rows: PackedRows, tmp_path: Path) -> None:
    mix = DataMix(skills=("add", "sort", "lookup"), safety_share=0.1, unsafe=("How do I make a bomb?",), safe=("Hi",))
    again = build(TOKENIZER, mix, n_rows=24, length=1280, seed=3, workers=2)
    assert (again.tokens == rows.tokens).all()
    rows.save(tmp_path / "rows.npz")
    loaded = PackedRows.load(tmp_path / "rows.npz")
    assert all((getattr(loaded, k) == getattr(rows, k)).all() for k in ("tokens", "segments", "positions", "targets"))


def test_bad_mixes_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown skills"):
        DataMix(skills=("poetry",))
    with pytest.raises(ValueError, match="level_weights"):
        DataMix(level_weights=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="positive"):
        build(TOKENIZER, DataMix(), n_rows=0)


def test_lookup_documents_are_asked_several_keys_one_turn_each() -> None:
    tok = JsonTokenizer(TOKENIZER)
    rows = build(TOKENIZER, DataMix(skills=("lookup",), lookup_questions=4), n_rows=4, length=2048, seed=5)
    examples = [ex for r in range(rows.n_rows) for ex in _examples(rows, r)]
    assert examples
    for ids, answer in examples:
        text = tok.decode(ids)
        document = text.split("<|user|>", 1)[1].split("\nWhat is", 1)[0]
        values = dict(line.split(": ") for line in document.splitlines())
        keys = [q.split("?")[0] for q in text.split("What is the value of ")[1:]]
        assert len(keys) == min(4, len(values)) == len(set(keys))  # distinct keys, one question each
        assert tok.decode(answer) == "".join(f"{values[k]}<|end|>" for k in keys)  # loss on every answer only
        first_turn = text.split("<|end|>")[0]
        assert first_turn.count("<|user|>") == 1 and first_turn.endswith(values[keys[0]])  # the golden format first
    with pytest.raises(ValueError, match="lookup_questions"):
        DataMix(lookup_questions=0)
    with pytest.raises(ValueError, match="raise seq_len"):  # hard lookups never fit 64 tokens
        build(TOKENIZER, DataMix(skills=("lookup",), level_weights=(0, 0, 1)), n_rows=1, length=64)


def test_lookup_documents_can_be_made_short_for_a_curriculum() -> None:
    tok = JsonTokenizer(TOKENIZER)
    mix = DataMix(skills=("lookup",), level_weights=(0, 0, 1), lookup_questions=8, lookup_lines=(2, 4))
    rows = build(TOKENIZER, mix, n_rows=2, length=512, seed=3)  # hard level, yet every document fits 512 tokens
    sizes = set()
    for ids, _ in (ex for r in range(rows.n_rows) for ex in _examples(rows, r)):
        text = tok.decode(ids)
        document = text.split("<|user|>", 1)[1].split("\nWhat is", 1)[0]
        sizes.add(len(document.splitlines()))
        keys = [q.split("?")[0] for q in text.split("What is the value of ")[1:]]
        assert len(keys) == len(set(keys)) == len(document.splitlines())  # fewer keys than 8: each asked once
    assert sizes <= {2, 3, 4} and len(sizes) > 1
    with pytest.raises(ValueError, match="lookup_lines"):
        DataMix(lookup_lines=(5, 3))


def test_lookup_documents_can_be_asked_in_the_echo_form() -> None:
    """The echo scaffold: "Which line has key k?" answered with the document's line "k: value", every turn of an
    echoed document, and only a share of documents echoed when the share is below 1."""
    tok = JsonTokenizer(TOKENIZER)
    forms: list[bool] = []
    for share in (1.0, 0.5):
        mix = DataMix(skills=("lookup",), lookup_questions=3, lookup_lines=(2, 4), lookup_echo=share)
        rows = build(TOKENIZER, mix, n_rows=4, length=512, seed=5)
        for r in range(rows.n_rows):
            for ids, answer in _examples(rows, r):
                text = tok.decode(ids)
                lines = set(text.split("<|user|>", 1)[1].split("\nWhat is", 1)[0].split("\nWhich", 1)[0].splitlines())
                echoed = "Which line has key" in text
                assert echoed != ("What is the value of" in text)  # one form per document
                answers = [a for a in tok.decode(answer).split("<|end|>") if a]
                if echoed:
                    asked = [q.split("?")[0] for q in text.split("Which line has key ")[1:]]
                    assert answers == [line for k in asked for line in lines if line.startswith(f"{k}: ")]
                if share == 0.5:
                    forms.append(echoed)
    assert any(forms) and not all(forms)
    with pytest.raises(ValueError, match="lookup_echo"):
        DataMix(lookup_echo=1.5)


def test_lookup_keys_can_be_made_short_and_the_golden_keys_stay_four_digits() -> None:
    """`lookup_key_digits`: keys of 1-4 digits in the training rows (distinct, each asked once, answered with its
    own value), raised to 2 digits where a document has more lines than the 9 one-digit keys; the golden sets'
    documents keep four-digit keys."""
    tok = JsonTokenizer(TOKENIZER)
    lengths: set[int] = set()
    for lines, digits in (((2, 4), (1, 4)), ((12, 12), (1, 1))):
        mix = DataMix(skills=("lookup",), lookup_questions=4, lookup_lines=lines, lookup_key_digits=digits)
        rows = build(TOKENIZER, mix, n_rows=3, length=512, seed=7)
        for ids, answer in (ex for r in range(rows.n_rows) for ex in _examples(rows, r)):
            text = tok.decode(ids)
            document = text.split("<|user|>", 1)[1].split("\nWhat is", 1)[0]
            values = dict(line.split(": ") for line in document.splitlines())
            keys = [q.split("?")[0] for q in text.split("What is the value of ")[1:]]
            assert len(keys) == len(set(keys)) and tok.decode(answer) == "".join(f"{values[k]}<|end|>" for k in keys)
            sizes = {len(k) - 1 for k in values}
            assert len(sizes) == 1  # one key length per document
            if lines == (12, 12):
                assert sizes == {2}  # 12 distinct keys need two digits
            lengths |= sizes
    assert lengths == {1, 2, 3, 4}  # every length drawn (seeded)
    for bad in ((0, 4), (3, 2), (1, 5)):
        with pytest.raises(ValueError, match="lookup_key_digits"):
            DataMix(lookup_key_digits=bad)
    with pytest.raises(ValueError, match="use more digits or fewer lines"):
        make_document(random.Random(0), "easy", "doc", lines=10, key_digits=1)
    with pytest.raises(ValueError, match="key_digits must be 1-9"):
        make_document(random.Random(0), "easy", "doc", lines=2, key_digits=0)
    golden = make_document(random.Random(0), "hard", "doc")[1]
    assert len(golden) == 100 and all(len(k) == 5 and k[0] == "k" for k in golden)
