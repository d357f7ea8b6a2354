"""Does a tokenizer belong to a checkpoint? The vocabularies the compared models were trained with.

A tokenizer from the wrong family runs without complaint and silently means other tokens
(" Mary" is 6393 in GPT-NeoX but 5335 in GPT-2, and both fit a Mamba's 50,280 rows), so
`check_tokenizer` refuses:
    any checkpoint      a tokenizer with more tokens than the embedding has rows;
    a known vocabulary  where the embedding has the row count of a vocabulary listed in
                        `KNOWN`, a tokenizer that is not that vocabulary: a different size, or
                        its special tokens at other IDs.
Other row counts (custom or tiny vocabularies) get only the first rule: nothing says which
tokenizer they were trained with. Embeddings are padded (mamba_ssm rounds rows up to a multiple
of 8), so a known vocabulary is recognised by its padded row count, not by its size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .checkpoint import ModelLoadError


@dataclass(frozen=True)
class Vocabulary:
    name: str
    size: int  # tokens in the tokenizer
    special: dict[str, int]  # special tokens at their fixed IDs


# keyed by the embedding rows of the checkpoints trained with each vocabulary
KNOWN = {
    50257: Vocabulary("GPT-2 BPE (gpt2, gpt2-medium, ...)", 50257, {"<|endoftext|>": 50256}),
    50280: Vocabulary("GPT-NeoX-20B (state-spaces/mamba-*, padded to 50,280 rows)", 50277,
                      {"<|endoftext|>": 0, "<|padding|>": 1}),
    50304: Vocabulary("GPT-NeoX-20B (EleutherAI/pythia-*, padded to 50,304 rows)", 50277,
                      {"<|endoftext|>": 0, "<|padding|>": 1}),
}


def check_tokenizer(tokenizer: Any, rows: int, name: str, *, force: bool = False) -> None:
    """Raise ModelLoadError when `tokenizer` cannot be `name`'s, whose embedding has `rows` rows.

    force: skip the known-vocabulary rule (not the row count, which indexing needs).
    """
    size = len(tokenizer)
    if size > rows:
        raise ModelLoadError(f"{name}: the tokenizer has {size} tokens but the model's embedding has "
                             f"only {rows} rows; this tokenizer does not belong to this model")
    expected = KNOWN.get(rows)
    if force or expected is None:
        return
    vocab = _vocab(tokenizer)
    found = {token: vocab.get(token) for token in expected.special}
    if size == expected.size and found == expected.special:
        return
    raise ModelLoadError(
        f"{name}: the embedding's {rows} rows are the {expected.name} vocabulary: {expected.size} tokens, "
        f"{_ids(expected.special)}; this tokenizer has {size} tokens, {_ids(found)}{_guess(vocab, size)}. "
        "Pass the checkpoint's own tokenizer, or load_model(..., force_tokenizer=True) to use this one anyway")


def _vocab(tokenizer: Any) -> dict[str, int]:
    if hasattr(tokenizer, "get_vocab"):
        return tokenizer.get_vocab()
    return {}


def _ids(special: dict[str, int | None]) -> str:
    return ", ".join(f"{token} = {'absent' if i is None else i}" for token, i in special.items())


def _guess(vocab: dict[str, int], size: int) -> str:
    """' (it looks like GPT-2 BPE ...)' when the tokenizer is another known vocabulary."""
    for known in KNOWN.values():
        if size == known.size and all(vocab.get(t) == i for t, i in known.special.items()):
            return f" (it looks like {known.name})"
    return ""
