"""Load the two models' tokenizers from an object, a local path or a Hub id.

Everything else in `datasets_gen` sees a `Vocab`: encode text without special tokens, the text of
one token, and the vocabulary size. Keeping that surface tiny lets a user pass a `transformers`
tokenizer, a raw `tokenizers.Tokenizer`, or files on disk, and get byte-identical datasets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from compare.loading import DEFAULT_TOKENIZERS, load_tokenizer

MODELS = ("mamba", "gpt2")
"""The two models a prompt is built for; every tokenizer mapping uses these keys."""


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
