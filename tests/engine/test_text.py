"""Generated text is text: the end-of-sequence marker (`<|end|>` for the zoo models) ends a sequence and
never appears in what the engine, the stream or `joulepath generate` return."""

import json

import pytest
from typer.testing import CliRunner

from joulepath.cli import app
from joulepath.engine import Engine, SamplingParams
from joulepath.model import LoadedModel, load_model

END = "<|end|>"
RUNNER = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def small() -> LoadedModel:
    return load_model("jp-small")


def _prompt(loaded: LoadedModel) -> str:
    return loaded.apply_chat_template([{"role": "user", "content": "What is 12 + 30?"}])


def test_the_end_marker_stops_generation_and_is_not_in_the_text(small: LoadedModel) -> None:
    out = Engine(small).generate([_prompt(small)], SamplingParams(max_tokens=16))[0]
    assert out.record.finish_reason == "stop" and out.output_ids[-1] in small.config.eos_token_ids
    assert out.text and END not in out.text


def test_ignore_eos_generates_past_the_marker_without_printing_it(small: LoadedModel) -> None:
    out = Engine(small).generate([_prompt(small)], SamplingParams(max_tokens=12, ignore_eos=True))[0]
    assert any(i in small.config.eos_token_ids for i in out.output_ids[:-1]) and END not in out.text


def test_streamed_text_has_no_end_marker(small: LoadedModel) -> None:
    pieces = list(Engine(small).stream(_prompt(small), SamplingParams(max_tokens=16)))
    assert pieces and END not in "".join(pieces)


def test_generate_command_prints_no_end_marker() -> None:
    out = RUNNER.invoke(app, ["generate", "What is 12 + 30?", "--model", "jp-small", "--max-tokens", "16"])
    assert out.exit_code == 0, out.output
    assert END not in out.output and "finish: stop" in out.output
    doc = RUNNER.invoke(app, ["generate", "What is 12 + 30?", "--model", "jp-small", "--json"])
    assert END not in json.loads(doc.output)["text"]


def test_greedy_answers_are_the_whole_output_decode(small: LoadedModel) -> None:
    """Incremental text equals what decoding each whole output (the engine's method before) gives."""
    from joulepath.quality import golden
    from joulepath.quality.tasks import chat_prompt

    from .test_detokenize import whole_output_text

    prompts = [chat_prompt(e) for e in golden.load("dev")[:12]]
    outs = Engine(small).generate(prompts, SamplingParams(max_tokens=48, stop=(END,)))
    for out in outs:
        assert out.text == whole_output_text(small.tokenizer, out.output_ids, small.config.eos_token_ids, (END,))
