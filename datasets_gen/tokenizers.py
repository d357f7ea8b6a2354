"""Load the two models' tokenizers from an object, a local path or a Hub id.

Everything else in `datasets_gen` sees a `Vocab`: encode text without special tokens, the text and
the bytes of one token, and the vocabulary size. Keeping that surface tiny lets a user pass a
`transformers` tokenizer, a raw `tokenizers.Tokenizer`, or files on disk, and get byte-identical
datasets.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders

from compare.loading import DEFAULT_TOKENIZERS, load_tokenizer

MODELS = ("mamba", "gpt2")
"""The two models a prompt is built for; every tokenizer mapping uses these keys."""


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte 0..255 as the printable character that stands for it
    in a byte-level BPE vocabulary (printable Latin-1 bytes as themselves, the rest from U+0100)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return {b: chr(b) for b in printable} | {b: chr(256 + n) for n, b in enumerate(extra)}


BYTE_OF_CHAR = {char: byte for byte, char in _bytes_to_unicode().items()}
"""Inverse of the byte-level alphabet: a vocabulary entry's characters → the bytes it encodes."""


@dataclass(frozen=True)
class Vocab:
    """A tokenizer reduced to what the suites need.

    `backend` is a `tokenizers.Tokenizer` when one can be reached (fast and identical across
    wrappers), otherwise a `transformers` tokenizer used through its public methods.
    `name` is the role used in messages ("mamba", "gpt2"); `origin` is where it came from (a path,
    a Hub id or a class name), recorded in the dataset's parameters.
    """

    name: str
    origin: str
    backend: Any

    @property
    def size(self) -> int:
        """Number of token IDs, added tokens included (valid IDs are 0 .. size-1)."""
        if isinstance(self.backend, Tokenizer):
            return self.backend.get_vocab_size(with_added_tokens=True)
        return len(self.backend)

    def encode(self, text: str) -> list[int]:
        """Token IDs of `text`, without BOS/EOS: prompts are compared token for token."""
        if isinstance(self.backend, Tokenizer):
            return self.backend.encode(text, add_special_tokens=False).ids
        return list(self.backend.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`; special tokens are kept so that no ID decodes to nothing silently."""
        return self.backend.decode(ids, skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes `token_id` stands for, exact even where it is part of a UTF-8 character.

        Byte-level BPE (GPT-2, GPT-NeoX) splits multi-byte characters across tokens, and decoding
        such a token alone gives U+FFFD; its vocabulary entry, read through the byte-level
        alphabet, gives the real bytes. Added tokens are stored as plain text. Any other backend
        is read through its decoded text, exact for tokenizers that never split a character.
        """
        if self._added_tokens is None:
            return self.decode([token_id]).encode("utf-8")
        if token_id in self._added_tokens:
            return self._added_tokens[token_id].encode("utf-8")
        return bytes(BYTE_OF_CHAR[char] for char in self.backend.id_to_token(token_id))

    @cached_property
    def _added_tokens(self) -> dict[int, str] | None:
        """ID → text of the added tokens of a byte-level backend; None if it is not byte-level."""
        if isinstance(self.backend, Tokenizer) and isinstance(self.backend.decoder, decoders.ByteLevel):
            return {i: t.content for i, t in self.backend.get_added_tokens_decoder().items()}
        return None

    def token_texts(self, ids: list[int]) -> list[str]:
        """The text of each token on its own, e.g. `" Mary"` rather than the BPE form `"ĠMary"`."""
        return [self.decode([i]) for i in ids]

    def check_ids(self, ids: list[int], field: str) -> None:
        """Raise `ValueError` naming `field` if any ID is outside `0 .. size-1`."""
        size = self.size  # a tokenizer call, not an attribute: once, not once per ID
        bad = [i for i in ids if not 0 <= i < size]
        if bad:
            raise ValueError(
                f"{field}: IDs {bad[:5]} are outside the {self.name} vocabulary; "
                f"allowed values are 0..{size - 1}"
            )


def _backend_of(obj: Any) -> Any:
    """The `tokenizers.Tokenizer` inside common wrappers, else the object itself."""
    if isinstance(obj, Tokenizer):
        return obj
    for attr in ("backend_tokenizer", "_tokenizer"):
        inner = getattr(obj, attr, None)
        if isinstance(inner, Tokenizer):
            return inner
    if callable(getattr(obj, "encode", None)) and callable(getattr(obj, "decode", None)):
        return obj
    raise TypeError(
        f"tokenizer: {type(obj).__name__} is not a tokenizer; allowed values are a "
        "transformers tokenizer, a tokenizers.Tokenizer, a local path or a Hub id"
    )


def load_vocab(spec: Any, name: str) -> Vocab:
    """A `Vocab` called `name` from a tokenizer object, a local path (file or folder) or a Hub id."""
    if isinstance(spec, Vocab):
        return spec
    if isinstance(spec, (str, Path)):
        backend = _backend_of(load_tokenizer(spec, what=f"tokenizers[{name!r}]"))
        return Vocab(name=name, origin=str(spec), backend=backend)
    return Vocab(name=name, origin=type(spec).__name__, backend=_backend_of(spec))


def load_vocabs(tokenizers: dict[str, Any] | None) -> dict[str, Vocab]:
    """One `Vocab` per model in `MODELS`; missing entries fall back to `DEFAULT_TOKENIZERS`."""
    tokenizers = dict(tokenizers or {})
    unknown = sorted(set(tokenizers) - set(MODELS))
    if unknown:
        raise ValueError(f"tokenizers: unknown keys {unknown}; allowed values are {list(MODELS)}")
    return {m: load_vocab(tokenizers.get(m, DEFAULT_TOKENIZERS[m]), m) for m in MODELS}
