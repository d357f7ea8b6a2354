"""`load_tokenizer`: a tokenizer from an object, a tokenizer.json file, a directory or a Hub id.

Its own module, below both `loading` (which loads a model's tokenizer) and `vocabularies` (which
loads the tokenizers it is given by path), so neither imports the other for it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..base.checkpoint import ModelLoadError


def load_tokenizer(spec: Any, *, what: str = "tokenizer"):
    """A tokenizer from an object (returned as is), a tokenizer.json file, or a directory / Hub id."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if not isinstance(spec, (str, os.PathLike)):
        if not (hasattr(spec, "encode") and hasattr(spec, "decode")):
            raise TypeError(f"{what} must be a tokenizer object or a path, got {type(spec).__name__}")
        return spec
    path = Path(spec).expanduser()
    if path.is_file():
        return PreTrainedTokenizerFast(tokenizer_file=str(path))
    if path.is_dir():
        if (path / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(path)
        if (path / "tokenizer.json").is_file():
            return PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"))
        if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            # OpenAI's original GPT-2 files: byte-level BPE, exactly what tokenizer.json would encode
            bpe = ByteLevelBPETokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
            return PreTrainedTokenizerFast(tokenizer_object=bpe)
        raise ModelLoadError(f"{what}: {path} holds no tokenizer.json, tokenizer_config.json or vocab.json+merges.txt")
    try:
        return AutoTokenizer.from_pretrained(str(spec))
    except OSError:
        raise ModelLoadError(f"{what}: could not load {spec!r} from the Hugging Face Hub or its cache. "
                             "Offline? Pass a local path (a directory or a tokenizer.json file) instead") from None
