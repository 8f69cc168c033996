"""The model's context: how many positions a request may occupy, and the refusal when a prompt does
not fit.

The rules are vLLM's: the context is the checkpoint's `max_position_embeddings` (`ModelConfig.
max_position`); a prompt that leaves no room for one generated token is refused, and `max_tokens` is
capped so that prompt + output never runs past the context (the request then ends with finish reason
"length", and its record says it was capped). A sliding window (Mistral) narrows what each token
attends to, not the positions the model was trained for, so it does not lengthen the context.
"""

from __future__ import annotations

from pathlib import Path

from joulepath.model.config import ModelConfig


class ContextLengthError(ValueError):
    """A request that does not fit the model's context; the message gives both lengths and what to do."""


def context_tokens(config: ModelConfig) -> int:
    """Positions a request (prompt + output) may occupy: the checkpoint's max_position_embeddings."""
    return config.max_position


def model_label(source: str) -> str:
    """A short name for messages: `jp-small` for a zoo folder, `dummy:tiny-llama` as is."""
    return Path(source).name or source


def check_prompt_fits(prompt_tokens: int, context: int, model: str, request: str = "the prompt") -> None:
    """Raise ContextLengthError when a prompt of `prompt_tokens` leaves no room for one output token."""
    if prompt_tokens >= context:
        raise ContextLengthError(
            f"{request} is {prompt_tokens:,} tokens, but {model}'s context is {context:,} tokens "
            f"(max_position_embeddings) and must hold the prompt and at least one generated token; shorten it "
            f"to at most {context - 1:,} tokens, or use a model with a longer context"
        )


def check_output_fits(prompt_tokens: int, max_tokens: int, context: int, model: str, setting: str) -> None:
    """Raise ContextLengthError where prompt + `max_tokens` would run past the context and capping is not
    wanted (a fixed-length benchmark, a scenario's setting); `setting` names what to lower."""
    if prompt_tokens + max_tokens > context:
        raise ContextLengthError(
            f"{setting} = {max_tokens:,} after a prompt of {prompt_tokens:,} tokens runs past {model}'s context "
            f"of {context:,} tokens (max_position_embeddings); lower {setting} to at most "
            f"{max(context - prompt_tokens, 0):,}, shorten the prompt, or use a model with a longer context"
        )


def output_room(prompt_tokens: int, max_tokens: int, context: int) -> int:
    """`max_tokens`, capped so that prompt + output stays within the context (vLLM's max_model_len rule).

    >>> output_room(500, 64, 512)
    12
    """
    return min(max_tokens, context - prompt_tokens)
