"""Token ids to text, incrementally, and stop strings on the new text only.

The engine's step returns token ids and finish flags; text is made here, after the step, by whoever
drives the engine (`Engine.generate`/`stream`, `joulepath.serving.frontend`). Re-decoding a whole
output on every token costs O(n) per token (O(n^2) per request); this costs O(1) per token:

- **prefix/read offsets** (as vLLM's `detokenize_incrementally` and Hugging Face's `TextStreamer` do
  it): decode only the ids from `prefix_offset` on, and take what lies past the text of
  `[prefix_offset, read_offset)`. Decoding a few ids of context keeps tokenizers that strip or merge
  at a boundary (a leading space, a byte-fallback run) consistent with decoding the whole output.
- **hold back an incomplete character**: a new text ending in U+FFFD may be a multi-byte UTF-8
  character cut between tokens; it is held until the next token completes it (or the request ends,
  when it is released as the whole-output decode would show it).
- **stop strings** are searched only in the new text plus the last `len(stop) - 1` characters before
  it, and that many characters are held back from the caller, so a stop string split across tokens is
  never shown before it is cut.

End-of-sequence and stop token ids (`<|end|>`, `</s>`) end a sequence and are never text, even where
`ignore_eos` generated past one.
"""

from __future__ import annotations

from dataclasses import dataclass

from joulepath.engine.sampling import SamplingParams
from joulepath.model.tokenizer import Tokenizer

REPLACEMENT = "\ufffd"  # what a decoder shows for an incomplete UTF-8 sequence


@dataclass(frozen=True)
class TextDelta:
    """New text of one request after a step. `finished`: the request is done (its text is complete)."""

    request_id: str
    text: str
    finished: bool
    stopped: bool  # a stop string ended it (the engine must be told: it did not see the string)


class IncrementalDetokenizer:
    """One request's text, grown one token id at a time.

    >>> from joulepath.model.tokenizer import ByteTokenizer
    >>> d = IncrementalDetokenizer(ByteTokenizer(), markers=(), stop=("!",))
    >>> [d.add(i) for i in "hé!x".encode()]
    ['h', '', 'é', '', '']
    >>> d.stopped, d.text
    (True, 'hé')
    """

    def __init__(self, tokenizer: Tokenizer, markers: tuple[int, ...], stop: tuple[str, ...] = ()) -> None:
        self._tok, self._markers, self._stop = tokenizer, frozenset(markers), tuple(s for s in stop if s)
        self._hold = max((len(s) for s in self._stop), default=1) - 1  # chars that may start a stop string
        self._ids: list[int] = []  # text ids: markers left out
        self._prefix_offset = self._read_offset = 0
        self._text = ""  # decoded so far (committed: no incomplete character at its end)
        self._shown = 0  # chars of `_text` returned to the caller
        self.stopped = False

    @property
    def text(self) -> str:
        """All text so far (cut before a stop string once one was found)."""
        return self._text

    def add(self, token_id: int, last: bool = False) -> str:
        """Take one generated id; return the text that may be shown now. `last`: the request ends with
        this token, so nothing is held back."""
        if self.stopped:
            return ""
        if token_id not in self._markers:
            self._ids.append(token_id)
        searched = len(self._text)
        self._text += self._decode_new(force=last)
        cut = self._find_stop(max(0, searched - self._hold))
        if cut is not None:
            self._text, self.stopped = self._text[:cut], True
        end = len(self._text) if (last or self.stopped) else max(self._shown, len(self._text) - self._hold)
        out, self._shown = self._text[self._shown : end], end
        return out

    def _decode_new(self, force: bool) -> str:
        """Text of the ids past `read_offset`; "" while it ends in an incomplete character (unless forced)."""
        if self._read_offset == len(self._ids):
            return ""
        prefix = self._tok.decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._tok.decode(self._ids[self._prefix_offset :])
        if len(full) <= len(prefix) and not force:
            return ""
        if full.endswith(REPLACEMENT) and not force:
            return ""
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return full[len(prefix) :]

    def _find_stop(self, start: int) -> int | None:
        """Where the earliest stop string begins at or after `start` (the only place a new one can be)."""
        hits = [i for s in self._stop if (i := self._text.find(s, start)) >= 0]
        return min(hits) if hits else None


class TextStage:
    """Detokenizers for many requests: feed it each engine step's outputs, get text deltas back.

    The caller tells the engine to finish a request whose delta says `stopped`."""

    def __init__(self, tokenizer: Tokenizer, eos_token_ids: tuple[int, ...]) -> None:
        self._tok, self._eos = tokenizer, tuple(eos_token_ids)
        self._open: dict[str, IncrementalDetokenizer] = {}
        self.texts: dict[str, str] = {}  # finished requests' whole text

    def open(self, request_id: str, params: SamplingParams) -> None:
        """Start a request's text: EOS ids and its stop ids are markers, never text."""
        markers = (*self._eos, *(params.stop_token_ids or ()))
        self._open[request_id] = IncrementalDetokenizer(self._tok, markers, params.stop)

    def add(self, request_id: str, token_id: int, finished: bool) -> TextDelta:
        """One generated id of an open request."""
        d = self._open[request_id]
        text = d.add(token_id, last=finished)
        if finished or d.stopped:
            self.texts[request_id] = self._open.pop(request_id).text
        return TextDelta(request_id, text, finished or d.stopped, d.stopped)

    def text_of(self, request_id: str) -> str:
        """The text so far (all of it once finished)."""
        d = self._open.get(request_id)
        return d.text if d is not None else self.texts[request_id]

    def close(self, request_id: str) -> None:
        """End an open request early (its text so far becomes its whole text)."""
        d = self._open.pop(request_id, None)
        if d is not None:
            self.texts[request_id] = d.text

    def drop(self, request_id: str) -> None:
        """Forget a request, open or finished (a client gone)."""
        self._open.pop(request_id, None)
        self.texts.pop(request_id, None)

    def pop(self, request_id: str) -> str:
        """A finished request's whole text, forgotten here (a long-running server keeps no history)."""
        return self.texts.pop(request_id)
