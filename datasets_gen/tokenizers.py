"""The tokenizers a suite is built for, one per tokenizer family, from an object, a local path or a Hub id.

Everything else in `datasets_gen` sees a `compare.vocabularies.Vocab`: encode text without
special tokens, the text and the bytes of one token, and the vocabulary size. Keeping that
surface tiny lets a user pass a `transformers` tokenizer, a raw `tokenizers.Tokenizer`, or files
on disk, and get byte-identical datasets.
"""

from __future__ import annotations

from typing import Any

from compare.loading import DEFAULT_TOKENIZERS
from compare.vocabularies import Vocab, load_vocab

MODELS = ("mamba", "gpt2")
"""The two models a prompt is built for; every tokenizer mapping uses these keys."""


def load_vocabs(tokenizers: dict[str, Any] | None) -> dict[str, Vocab]:
    """One `Vocab` per model in `MODELS`; missing entries fall back to `DEFAULT_TOKENIZERS`."""
    tokenizers = dict(tokenizers or {})
    unknown = sorted(set(tokenizers) - set(MODELS))
    if unknown:
        raise ValueError(f"tokenizers: unknown keys {unknown}; allowed values are {list(MODELS)}")
    return {m: load_vocab(tokenizers.get(m, DEFAULT_TOKENIZERS[m]), m) for m in MODELS}
