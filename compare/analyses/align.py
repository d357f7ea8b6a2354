"""Alignment of a prompt from one tokenizer into another, on character boundaries.

"The same prompt" for two models with different tokenizers is defined here. The source IDs are cut
into *groups*, the shortest runs of tokens whose bytes end on a UTF-8 character boundary, and each
group's text is encoded on its own by the target tokenizer: both models read the same text and
agree on where each group ends. Most groups are one token (GPT-NeoX → GPT-2: IDs [42, 69], "I"
and "d", → [40, 67]). Byte-level BPE splits a multi-byte character (emoji, Hebrew, CJK) across
tokens, and each such token decoded alone is U+FFFD; grouped, " 🐍" (three GPT-NeoX tokens)
becomes the GPT-2 tokens of " 🐍" rather than of three U+FFFD.

A group's target IDs sit on its last source token; the tokens before it end inside a character
and get none, so a comparison has nothing to pair them with. A group that is not exactly one token
on each side is flagged (never merged with its neighbours), and so is one whose bytes are not
valid UTF-8 (IDs that start or end inside a character): its text holds U+FFFD, which the target
reads as bytes the source never had.
"""

from __future__ import annotations

import codecs
from typing import Any, NamedTuple

from ..handle.vocabularies import Vocab, load_vocab


class Alignment(NamedTuple):
    """Result of `align`, one entry of `flags` and `pieces` per source token.

    ids:    the aligned target IDs, the concatenation of `pieces`.
    flags:  True where the source token is not, alone, exactly one target token: part of a
            multi-token group, split into several target tokens, or bytes that are not UTF-8.
    pieces: the target IDs of the group each source token ends; [] for a token that ends inside
            a character (not the last of its group).
    """

    ids: list[int]
    flags: list[bool]
    pieces: list[list[int]]

    @property
    def flagged(self) -> bool:
        return any(self.flags)


class Group(NamedTuple):
    """Source tokens `start:stop`, whose bytes decode to `text`; `exact` if they are valid UTF-8."""

    start: int
    stop: int
    text: str
    exact: bool


def groups(ids: list[int], source: Vocab) -> list[Group]:
    """Cut `ids` after every token whose bytes end on a character boundary of the running text."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out, start, text, raw = [], 0, "", b""
    for t, token_id in enumerate(ids):
        data = source.token_bytes(token_id)
        raw, text = raw + data, text + decoder.decode(data)
        pending, _ = decoder.getstate()
        if not pending:  # no bytes of an unfinished character carried over to the next token
            out.append(Group(start, t + 1, text, text.encode("utf-8") == raw))
            start, text, raw = t + 1, "", b""
    if start < len(ids):  # the IDs end inside a character
        out.append(Group(start, len(ids), text + decoder.decode(b"", final=True), False))
    return out


def align(ids: list[int], source_tokenizer: Any, target_tokenizer: Any) -> Alignment:
    """Encode the text of each group of `ids` (see `groups`) on its own with the target tokenizer.

    The tokenizers may be `Vocab`s, tokenizer objects, local paths or Hub ids (`load_vocab`).
    """
    source_tokenizer = load_vocab(source_tokenizer, "source_tokenizer")
    target_tokenizer = load_vocab(target_tokenizer, "target_tokenizer")
    source_tokenizer.check_ids(list(ids), "ids")
    pieces, flags = [], []
    for group in groups(list(ids), source_tokenizer):
        piece = target_tokenizer.encode(group.text)
        size = group.stop - group.start
        pieces += [[] for _ in range(size - 1)] + [piece]
        flags += [size != 1 or len(piece) != 1 or not group.exact] * size
    return Alignment(ids=[i for piece in pieces for i in piece], flags=flags, pieces=pieces)
