"""Vocabularies: a tokenizer's tokens as text and bytes, and which vocabulary a checkpoint was trained with.

Token to text, one way everywhere (`token_texts`, `text`): special tokens kept ("<|endoftext|>"),
spaces as the tokenizer wrote them (no clean-up, so " ." stays " ."). A token that is part of a
multi-byte character (byte-level BPE splits emoji and CJK) decodes to U+FFFD alone; `Vocab`
reads its exact bytes from the vocabulary entry, which alignment (`compare.analyses.align`) needs.

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

import hashlib
import re
import weakref
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

from tokenizers import Tokenizer, decoders

from .. import families
from ..base.checkpoint import ModelLoadError
from .tokenizer import load_tokenizer

# A cache, not state: a digest of each tokenizer object (`same_tokenizer`).
_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def token_texts(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """The text of each ID on its own, e.g. `" Mary"` rather than the BPE form `"ĠMary"`.

    tokenizer: a `transformers` tokenizer or a `tokenizers.Tokenizer`.
    """
    return _decode(tokenizer, [[int(i)] for i in ids])


def text(tokenizer: Any, ids: Sequence[int]) -> str:
    """The text of `ids` read together (characters split over several tokens come out whole)."""
    return _decode(tokenizer, [[int(i) for i in ids]])[0]


def check_encodable(value: str, what: str) -> None:
    """Raise ValueError naming `what` if `value` holds a lone surrogate (U+D800..U+DFFF): a str
    Python allows (e.g. from os.listdir or a command line with invalid UTF-8) that is not text, so
    no tokenizer can encode it (the Rust tokenizers raise an unhelpful TypeError)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:  # UTF-8 encodes every other code point
        raise ValueError(f"{what}: {value[:40]!r} holds a lone surrogate U+{ord(value[err.start]):04X} at index "
                         f"{err.start}, which is not a character; allowed values are valid Unicode text (a str "
                         "that encodes as UTF-8)") from None


def same_tokenizer(a: Any, b: Any) -> bool:
    """Whether two tokenizers are the same: the same text gives the same IDs and an ID the same token.

    Mamba and Pythia both read GPT-NeoX-20B: for them the three variants coincide and the
    cross-model metrics can run over the whole vocabulary. Compared by content (the serialised
    `tokenizers` backend: vocabulary, merges, normaliser, added tokens), as each checkpoint
    loads its own copy.
    """
    return a is b or _digest(a) == _digest(b)


def _digest(tokenizer: Any) -> str:
    if tokenizer not in _DIGESTS:
        backend = tokenizer if isinstance(tokenizer, Tokenizer) else getattr(tokenizer, "backend_tokenizer", None)
        # no backend (a slow tokenizer): its vocabulary, which is what an ID means
        content = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
        _DIGESTS[tokenizer] = hashlib.sha256(content.encode()).hexdigest()
    return _DIGESTS[tokenizer]


def tokenizer_family(family: str) -> str:
    """The first family (in `families.FAMILIES` order) whose default tokenizer `family` reads:
    "mamba" for "pythia" (both GPT-NeoX-20B), else the family itself. Suite rows store one column
    set per family; a family's columns equal those of its tokenizer family."""
    hub_id = families.get(family).tokenizer
    return next(name for name, f in families.FAMILIES.items() if f.tokenizer == hub_id)


def _decode(tokenizer: Any, sequences: list[list[int]]) -> list[str]:
    if isinstance(tokenizer, Tokenizer):  # the backend has no clean-up step
        return tokenizer.decode_batch(sequences, skip_special_tokens=False)
    return tokenizer.batch_decode(sequences, skip_special_tokens=False, clean_up_tokenization_spaces=False)


# --- a tokenizer as bytes --------------------------------------------------------------------------

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
    """A tokenizer reduced to what alignment and the suites need.

    `backend` is a `tokenizers.Tokenizer` when one can be reached (fast and identical across
    wrappers), otherwise a `transformers` tokenizer used through its public methods.
    `name` is used in messages (a family, "mamba", or an argument); `origin` is where it came from
    (a path, a Hub id or a class name), recorded in a dataset's parameters.
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
        """Text of `ids` read together (`text`)."""
        return text(self.backend, ids)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes `token_id` stands for, exact even where it is part of a UTF-8 character.

        Byte-level BPE (GPT-2, GPT-NeoX) splits multi-byte characters across tokens, and decoding
        such a token alone gives U+FFFD; its vocabulary entry, read through the byte-level
        alphabet, gives the real bytes. Added tokens are stored as plain text. Any other backend
        is read through its decoded text, exact for tokenizers that never split a character;
        where that text has U+FFFD, the entry read as bytes (through the byte-level alphabet, or
        as a byte-fallback `<0xNN>`) is taken if those bytes decode to that same text: a
        byte-level vocabulary behind a wrapper with no `tokenizers` backend (transformers' Python
        tokenizers, e.g. `ClvpTokenizer`), or SentencePiece's byte fallback.
        """
        if self._added_tokens is not None:  # a byte-level backend
            if token_id in self._added_tokens:
                return self._added_tokens[token_id].encode("utf-8")
            entry = self._entry(token_id)
            if entry and all(char in BYTE_OF_CHAR for char in entry):
                return bytes(BYTE_OF_CHAR[char] for char in entry)
        decoded = self.decode([token_id])
        if "\ufffd" in decoded:
            # the check is what makes reading the entry sound: bytes that decode as the tokenizer does
            for data in _entry_readings(self._entry(token_id)):
                if data.decode("utf-8", errors="replace") == decoded:
                    return data
        return decoded.encode("utf-8")

    def _entry(self, token_id: int) -> str:
        """The vocabulary entry of `token_id` ("" where the backend cannot say)."""
        if isinstance(self.backend, Tokenizer):
            entry = self.backend.id_to_token(token_id)
        else:
            convert = getattr(self.backend, "convert_ids_to_tokens", None)
            entry = convert(int(token_id)) if convert is not None else None
        return entry if isinstance(entry, str) else ""

    @cached_property
    def _added_tokens(self) -> dict[int, str] | None:
        """ID → text of the added tokens of a byte-level backend; None if it is not byte-level."""
        if isinstance(self.backend, Tokenizer) and isinstance(self.backend.decoder, decoders.ByteLevel):
            return {i: t.content for i, t in self.backend.get_added_tokens_decoder().items()}
        return None

    def token_texts(self, ids: list[int]) -> list[str]:
        """The text of each token on its own (`token_texts`)."""
        return token_texts(self.backend, ids)

    def check_ids(self, ids: list[int], field: str) -> None:
        """Raise `ValueError` naming `field` if any ID is outside `0 .. size-1`."""
        size = self.size  # a tokenizer call, not an attribute: once, not once per ID
        bad = [i for i in ids if not 0 <= i < size]
        if bad:
            raise ValueError(
                f"{field}: IDs {bad[:5]} are outside the {self.name} vocabulary; "
                f"allowed values are 0..{size - 1}"
            )


def _entry_readings(entry: str) -> list[bytes]:
    """The bytes a vocabulary entry may stand for: through the byte-level alphabet, and a
    SentencePiece byte-fallback entry (`<0xE2>`) as its byte."""
    readings = []
    if entry and all(char in BYTE_OF_CHAR for char in entry):
        readings.append(bytes(BYTE_OF_CHAR[char] for char in entry))
    fallback = re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", entry)
    if fallback:
        readings.append(bytes([int(fallback.group(1), 16)]))
    return readings


def byte_text(tokenizer: Any, token_id: int, text: str | None = None) -> str:
    """The token's text (`token_texts`); a token that is no whole character (its text has "�")
    written from its bytes (`Vocab.token_bytes`): the valid UTF-8 in them as text, each byte that is
    not as `\\xNN` (`\\xe2\\x80`, ` \\xe2`), so that different pieces do not all read "�". Where
    the bytes are not known, the text with its "�".

    text: the token's decoded text when the caller has it.
    """
    text = token_texts(tokenizer, [token_id])[0] if text is None else text
    if "\ufffd" not in text:
        return text
    return load_vocab(tokenizer, "tokenizer").token_bytes(int(token_id)).decode("utf-8", errors="backslashreplace")


def _backend_of(obj: Any) -> Any:
    """The `tokenizers.Tokenizer` inside common wrappers, else the object itself."""
    if isinstance(obj, Tokenizer):
        return obj
    for attr in ("backend_tokenizer", "_tokenizer"):
        inner = getattr(obj, attr, None)
        # a GPT-2 folder of vocab.json and merges.txt holds a `ByteLevelBPETokenizer`, itself a wrapper
        inner = getattr(inner, "_tokenizer", inner)
        if isinstance(inner, Tokenizer):
            return inner
    if callable(getattr(obj, "encode", None)) and callable(getattr(obj, "decode", None)):
        return obj
    raise TypeError(
        f"tokenizer: {type(obj).__name__} is not a tokenizer; allowed values are a "
        "transformers tokenizer, a tokenizers.Tokenizer, a local path or a Hub id"
    )


def same_tokens(a: Vocab, ids_a: Sequence[int], b: Vocab, ids_b: Sequence[int]) -> list[bool]:
    """Whether each ids_a[i] of vocabulary `a` is the same token as ids_b[i] of `b`: the same bytes.

    Texts would not do: every piece of a multi-byte character decodes alone to U+FFFD, so GPT-2's
    first two bytes of "’" and GPT-NeoX's last byte of "é" would read as one token."""
    return [a.token_bytes(int(i)) == b.token_bytes(int(j)) for i, j in zip(ids_a, ids_b)]


def load_vocab(spec: Any, name: str) -> Vocab:
    """A `Vocab` called `name` from a tokenizer object, a local path (file or folder) or a Hub id."""
    if isinstance(spec, Vocab):
        return spec
    if isinstance(spec, (str, Path)):
        backend = _backend_of(load_tokenizer(spec, what=f"tokenizers[{name!r}]"))
        return Vocab(name=name, origin=str(spec), backend=backend)
    return Vocab(name=name, origin=type(spec).__name__, backend=_backend_of(spec))


# --- the known vocabularies ---------------------------------------------------------------------

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
    50288: Vocabulary("GPT-NeoX-20B (state-spaces/mamba2-*, padded to 50,288 rows)", 50277,
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
