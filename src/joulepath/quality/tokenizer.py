"""The suite's tokenizer: byte-level BPE trained with the `tokenizers` library, one token per digit
(numbers then tokenize the same way at every magnitude, which is what arithmetic needs), and the chat
special tokens."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from joulepath.quality.tasks import LEVELS, SKILLS, SPECIAL_TOKENS, chat_prompt, chat_target, generate


def corpus(n: int, seed: int = 0) -> Iterator[str]:
    """Rendered training examples of every skill and level (the tokenizer's training text)."""
    rng = random.Random(seed)
    for i in range(n):
        ex = generate(SKILLS[i % len(SKILLS)], LEVELS[(i // len(SKILLS)) % len(LEVELS)], rng)
        yield chat_prompt(ex) + chat_target(ex)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    return tok
