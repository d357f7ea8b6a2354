"""`load_model`: aliases, Hub ids and local directories → a `Model` handle.

The family is recognised from config.json by the adapters (`families`): transformers GPT-2
(model_type "gpt2", eager attention so the `pattern` point exists), transformers Mamba (the *-hf
repos) and original mamba_ssm checkpoints (both into our `MambaLM`), transformers GPT-NeoX
(Pythia, model_type "gpt_neox"). A Hub id is fetched (or found in the local cache) and then
loaded like a local directory, so both routes run the same code; each family checks its config
and memory before anything is allocated, `checkpoint` checks the files, and `vocabularies`
checks that the tokenizer belongs to the checkpoint.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..base import checkpoint
from .. import families
from ..base.checkpoint import ModelLoadError
from .model import Model, cast_module, parse_dtype
from .tokenizer import load_tokenizer
from .vocabularies import check_tokenizer

ALIASES = families.ALIASES
DEFAULT_TOKENIZERS = {name: family.tokenizer for name, family in families.FAMILIES.items()}
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")


# A cache, not state: a model named by its source is loaded once per process and device.
_CACHE: dict[tuple[str, str], Model] = {}


def load_model(source: str | os.PathLike, *, tokenizer: Any = None, device: str | torch.device | None = None,
               dtype: str | torch.dtype | None = None, force_tokenizer: bool = False) -> Model:
    """Load a model of any family (`families`: Mamba, GPT-2, Pythia) from an alias, a Hub id or a local directory.

    tokenizer: a tokenizer object, or a path (directory or tokenizer.json); used when the model
        directory has none. Default: the family's Hub tokenizer (`Family.tokenizer`).
    device: "cpu", "cuda", ... (default: CUDA when available).
    dtype: "float32" (default), "bfloat16" or "float16", or the torch dtype: the weights and
        matmuls in that dtype; Mamba keeps its conv, scan, state and residual stream in fp32,
        as mamba_ssm does (`model.cast_module`); logits are returned in fp32. On a CPU without
        bf16 matmul hardware (AMX, AVX512-BF16) bfloat16 is slower than float32: a warning says so.
    force_tokenizer: use the tokenizer even where the checkpoint's embedding is a known
        vocabulary (GPT-2's, GPT-NeoX's) and the tokenizer is not that one (`vocabularies`);
        it must still have no more tokens than the embedding has rows.
    Raises ModelLoadError, naming the file, for unreadable or inconsistent files, weights that
    are not finite floats (or are all zero), a config too large for the memory available, and
    a tokenizer that does not belong to the checkpoint.
    """
    directory, name = _resolve(source)
    device, dtype = _device(device), parse_dtype(dtype)
    if not isinstance(force_tokenizer, bool):
        raise ValueError(f"force_tokenizer must be True or False, got {force_tokenizer!r}")
    config = checkpoint.read_config(directory)
    family = families.detect(config, directory)
    module = cast_module(family.build(directory, config).to(device=device), dtype, stacklevel=3)
    tok = _tokenizer(directory, tokenizer, family, name)
    check_tokenizer(tok, family.embedding(module).weight.shape[0], name, force=force_tokenizer)
    return Model(name=name, family=family.name, module=module, tokenizer=tok, vocab_size=len(tok),
                 max_positions=family.max_positions(config))


def cached_model(source: str | os.PathLike, *, device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None) -> Model:
    """`load_model(source, device=device, dtype=dtype)`, loaded once per process and dtype: what
    `compare` and the sweeps use when given a source instead of a handle."""
    key = (str(source), str(device), str(parse_dtype(dtype)))
    if key not in _CACHE:
        _CACHE[key] = load_model(source, device=device, dtype=dtype)
    return _CACHE[key]


def _resolve(source) -> tuple[Path, str]:
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be an alias, a Hub id or a directory path, got {type(source).__name__}")
    path = Path(source).expanduser()
    if path.is_dir():
        return path, path.name
    if path.exists():
        raise ModelLoadError(f"{source}: is a file; pass the directory that holds config.json and the weights")
    text = str(source)
    if text in ALIASES:
        return _download(ALIASES[text]), text
    if "/" in text and not text.startswith((".", "/", "~")) and text.count("/") == 1:
        return _download(text), text
    if "/" in text:
        raise ModelLoadError(f"{source}: no such directory")
    raise ModelLoadError(f"unknown model alias {text!r}; known aliases: {', '.join(ALIASES)}; "
                         "or pass a Hub id ('owner/name') or a local directory")


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = ["*.json", "*.txt", "model.safetensors", "model-*-of-*.safetensors"]  # shards: their index is a .json
    try:
        directory = Path(snapshot_download(repo_id, allow_patterns=patterns))
        if not any((directory / f).exists() for f in checkpoint.WEIGHT_FILES if "safetensors" in f):
            # pickles only where no safetensors exist; a .bin index came with "*.json", its shards did not
            directory = Path(snapshot_download(repo_id, allow_patterns=patterns + ["pytorch_model.bin",
                                                                               "pytorch_model-*-of-*.bin"]))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        raise ModelLoadError(
            f"could not fetch {repo_id!r} from the Hugging Face Hub, and it is not in the local cache "
            f"({type(err).__name__}). Offline, download it elsewhere (e.g. `hf download {repo_id} "
            f"--local-dir DIR`), copy DIR here, and pass the directory: load_model('DIR')") from None
    return directory


def _tokenizer(directory: Path, spec, family: families.Family, name: str):
    if spec is not None:
        return load_tokenizer(spec)
    if any((directory / f).is_file() for f in _TOKENIZER_FILES):
        return load_tokenizer(directory)
    return load_tokenizer(family.tokenizer, what=f"tokenizer for {name}")


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be like 'cpu' or 'cuda:0', got {device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():  # else torch asserts deep inside .to()
        raise ValueError(f"device: {str(device)!r} asks for CUDA, which this torch ({torch.__version__}) "
                         "cannot use here (built without CUDA, or no GPU); allowed values are 'cpu', or None "
                         "for CUDA when available")
    return device
