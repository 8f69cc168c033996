"""Tokenizers: a Hugging Face `tokenizer.json` through the `tokenizers` library, or a byte-level
fallback for `dummy:` models that ship none (ids 0-255 are the UTF-8 bytes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from tokenizers import Tokenizer as HFTokenizer


class Tokenizer(Protocol):
    name: str
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def token_id(self, token: str) -> int | None: ...


class JsonTokenizer:
    """A `tokenizer.json` (any model the `tokenizers` library reads)."""

    def __init__(self, path: Path) -> None:
        self._tok = HFTokenizer.from_file(str(path))
        self.name = str(path)
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self._tok.encode(text, add_special_tokens=False).ids
        return ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Many texts at once (the library tokenizes them in parallel)."""
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        text: str = self._tok.decode(ids, skip_special_tokens=False)
        return text

    def token_id(self, token: str) -> int | None:
        result: int | None = self._tok.token_to_id(token)
        return result

    def save(self, path: Path) -> None:
        self._tok.save(str(path))

    @property
    def raw(self) -> Any:
        return self._tok


class ByteTokenizer:
    """UTF-8 bytes as token ids 0-255; for dummy models without a tokenizer of their own."""

    name = "bytes"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    def token_id(self, token: str) -> int | None:
        return None
