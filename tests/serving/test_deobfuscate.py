from joulepath.serving.deobfuscate import variants


def _readings(text: str) -> list[str]:
    return [v.text for v in variants(text)]


def test_plain_text_has_one_reading() -> None:
    assert _readings("What is 12 + 30?") == ["What is 12 + 30?"]
    assert _readings("k8671: 863, an H100 in 2024") == ["k8671: 863, an H100 in 2024"]  # keys and models stay


def test_leetspeak_is_read_as_letters_with_both_readings_of_one() -> None:
    assert "sarin" in _readings("s4rin") and "anthrax" in _readings("@nthrax")
    assert {"ricin", "explosives"} <= set(_readings("r1c1n")) | set(_readings("exp1osives"))
    assert _readings("bomb!") == ["bomb!"]  # a trailing exclamation mark is punctuation


def test_split_and_spaced_letters_are_joined() -> None:
    for text in ("sa-rin", "s.a.r.i.n", "s a r i n", "s - a - r - i - n", "sa*rin"):
        assert "sarin" in _readings(text), text


def test_look_alike_accented_and_invisible_characters_are_folded() -> None:
    for text in ("sаrin", "sarín", "sa\u200brin", "sa\u00adrin"):  # Cyrillic а, accent, zero-width, soft hyphen
        assert "sarin" in _readings(text), repr(text)


def test_spans_map_back_to_the_original() -> None:
    text = "x s a r i n y"
    v = next(v for v in variants(text) if "sarin" in v.text)
    start = v.text.index("sarin")
    assert v.span(start, start + 5) == (2, 11) and text[2:11] == "s a r i n"
