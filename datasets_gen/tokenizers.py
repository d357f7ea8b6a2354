"""The tokenizers a suite is built for, one per tokenizer family, from an object, a local path or a Hub id.

Everything else in `datasets_gen` sees a `compare.handle.vocabularies.Vocab`: encode text without
special tokens, the text and the bytes of one token, and the vocabulary size. Keeping that
surface tiny lets a user pass a `transformers` tokenizer, a raw `tokenizers.Tokenizer`, or files
on disk, and get byte-identical datasets.
"""

from __future__ import annotations

from typing import Any

from compare import families
from compare.handle.loading import DEFAULT_TOKENIZERS
from compare.handle.vocabularies import Vocab, load_vocab, tokenizer_family

SUITE_TOKENIZERS = ("EleutherAI/gpt-neox-20b", "openai-community/gpt2")
"""The tokenizers a suite is aligned across: the thesis's pair (GPT-NeoX-20B reads Mamba-1, Mamba-2 and
Pythia; GPT-2 its own). A hybrid family with a vocabulary of its own (Granite-4.0-H, Falcon-H1) has
no columns: `compare` and a study tokenise a row's text for it at run time, under the checks the
columns are built under (`compare.analyses.rows`), and mark it `run_time_ids`."""

FAMILIES = tuple(name for name, family in families.FAMILIES.items() if family.tokenizer in SUITE_TOKENIZERS)
"""The model families on the suite tokenizers ("mamba", "mamba2", "gpt2", "pythia"): a row has a
column set for each."""

IDENTICAL = {f: tokenizer_family(f) for f in FAMILIES if tokenizer_family(f) != f}
"""Families whose columns are copies of another's, as they read its tokenizer: {"pythia": "mamba"}
(GPT-NeoX-20B). Stored in each row's params, so a reader can tell copies from measurements."""

TOKENIZER_FAMILIES = tuple(f for f in FAMILIES if f not in IDENTICAL)
"""The families with a tokenizer of their own ("mamba", "gpt2"): the keys of `tokenizers` and
the values of a suite's `source`."""


def load_vocabs(tokenizers: dict[str, Any] | None) -> dict[str, Vocab]:
    """One `Vocab` per family in `TOKENIZER_FAMILIES`; missing entries fall back to `DEFAULT_TOKENIZERS`."""
    tokenizers = dict(tokenizers or {})
    copies = sorted(set(tokenizers) & set(IDENTICAL))
    if copies:
        raise ValueError(f"tokenizers: {copies[0]!r} reads the {IDENTICAL[copies[0]]!r} tokenizer and its columns "
                         f"copy that family's; give the tokenizer as {IDENTICAL[copies[0]]!r}")
    unknown = sorted(set(tokenizers) - set(TOKENIZER_FAMILIES))
    if unknown:
        raise ValueError(f"tokenizers: unknown keys {unknown}; allowed values are {list(TOKENIZER_FAMILIES)}")
    return {m: load_vocab(tokenizers.get(m, DEFAULT_TOKENIZERS[m]), m) for m in TOKENIZER_FAMILIES}
