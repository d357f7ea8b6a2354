"""Token-by-token alignment of a prompt from one tokenizer into another.

"The same prompt" for two models with different tokenizers is defined here: each source token's
text is re-encoded *on its own* in the target tokenizer, so both models read the same text split
at the same places. Example (GPT-NeoX → GPT-2): IDs [42, 69] are "I", "d" → [40, 67].

A source token with no single-token counterpart keeps all its target pieces (never merged with its
neighbours) and is flagged, so a comparison can drop or inspect the prompt instead of trusting a
silently shifted position.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from datasets_gen.tokenizers import Vocab, load_vocab

REPLACEMENT_CHAR = "\ufffd"


class Alignment(NamedTuple):
    """Result of `align`, one entry of `flags` and `pieces` per source token.

    ids:    the aligned target IDs, the concatenation of `pieces` (len ≥ len(source ids)).
    flags:  True where the source token has no exact single-token counterpart.
    pieces: the target IDs each source token became (length 1 unless flagged).
    """

    ids: list[int]
    flags: list[bool]
    pieces: list[list[int]]

    @property
    def flagged(self) -> bool:
        return any(self.flags)


def _is_lossy(text: str, token_id: int, source: Vocab) -> bool:
    """True if the token is part of a UTF-8 character, so its text alone is not its bytes."""
    return REPLACEMENT_CHAR in text and source.encode(text) != [token_id]


def align(ids: list[int], source_tokenizer: Any, target_tokenizer: Any) -> Alignment:
    """Re-encode each source token's text on its own in the target tokenizer.

    The tokenizers may be `Vocab`s, tokenizer objects, local paths or Hub ids (`load_vocab`).

    Tokens that are byte fragments of a multi-byte character decode to U+FFFD; they are flagged
    even if the replacement character happens to be one target token, since the bytes differ.
    """
    source_tokenizer = load_vocab(source_tokenizer, "source_tokenizer")
    target_tokenizer = load_vocab(target_tokenizer, "target_tokenizer")
    source_tokenizer.check_ids(list(ids), "ids")
    pieces, flags = [], []
    for token_id in ids:
        text = source_tokenizer.decode([token_id])
        piece = target_tokenizer.encode(text)
        pieces.append(piece)
        flags.append(len(piece) != 1 or _is_lossy(text, token_id, source_tokenizer))
    return Alignment(ids=[i for piece in pieces for i in piece], flags=flags, pieces=pieces)
