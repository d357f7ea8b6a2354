"""What a checkpoint directory must satisfy before a model is built from it.

Bad files must fail loudly, naming the file and what is wrong, never as a raw parser error
or, worse, as a model that runs and means nothing:
    config.json        UTF-8 JSON object; every size a positive int (bools and floats refused)
    memory             the parameters the config describes must fit in available memory,
                       checked before anything is allocated
    weights file       model.safetensors or pytorch_model.bin, or their shards (model.safetensors.index.json,
                       pytorch_model.bin.index.json: transformers' sharded formats); readable; pickles
                       only under torch's weights_only=True; tensors floating-point and finite; not all
                       zero, nor an all-zero embedding
    shard index        a JSON "weight_map" of tensor names to shard files of its format, each a plain
                       file name beside the index (never a path out of the folder), present, and
                       holding exactly the tensors mapped to it (none missing, none in two shards)

Each family counts its parameters from the config (`Family.parameter_count`).
Each parameter is built in fp32 before any cast, so the model needs at least 4 bytes per
parameter; a config that cannot fit even that is refused before the first allocation.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch

from . import memory

FP32_BYTES = 4
# {"weight_map": {tensor name: shard file}}, as save_pretrained writes; the suffix of that index's shards
SHARD_INDEXES = {"model.safetensors.index.json": ".safetensors", "pytorch_model.bin.index.json": ".bin"}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
EMBEDDING_KEYS = ("wte.weight", "embeddings.weight", "embedding.weight", "embed_in.weight")  # GPT-2, Mamba -hf, mamba_ssm, Pythia
MAX_NAMED = 5  # tensors named in one message
_REQUIRED = object()


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be found or understood; the message says what to do."""


# --- config.json ---------------------------------------------------------------------------

def read_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{directory}: no config.json; expected a transformers GPT-2, Mamba or "
                             "GPT-NeoX (Pythia) directory, or an original mamba_ssm checkpoint")
    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ModelLoadError(f"{path}: not UTF-8 text (byte {err.start}); config.json must be a "
                             "UTF-8 JSON object") from None
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column "
                             f"{err.colno}); the file may be truncated or hand-edited") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path}: must hold a JSON object {{...}} of settings, got a JSON "
                             f"{type(config).__name__}")
    return config


def size(config: dict, key: str, where, default=_REQUIRED) -> int:
    """config[key] (or default when absent), which must be a positive int; `where` names the file."""
    if key not in config:
        if default is _REQUIRED:
            raise ModelLoadError(f"{where}: missing key {key!r} (a positive integer)")
        return default
    value = config[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ModelLoadError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value


def flag(config: dict, key: str, where, default: bool) -> bool:
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise ModelLoadError(f"{where}: {key} must be true or false, got {value!r}")
    return value


# --- memory ----------------------------------------------------------------------------------

def check_memory(n_params: int, directory: Path) -> None:
    """Refuse a model whose fp32 parameters alone exceed the memory available now."""
    need, free = n_params * FP32_BYTES, memory.available_bytes()
    if free is not None and need > free:
        raise ModelLoadError(f"{directory / 'config.json'} describes {n_params:,} parameters: about "
                             f"{memory.size_text(need)} in fp32 ({FP32_BYTES} bytes each), more than the "
                             f"{memory.size_text(free)} of memory available (MemAvailable); is a size in "
                             "config.json wrong?")


# --- weights ---------------------------------------------------------------------------------

def read_weights(directory: Path, ignored=lambda key: False) -> tuple[Path, dict[str, torch.Tensor]]:
    """The weights file (the first of `WEIGHT_FILES` present: safetensors before pickles, one file
    before shards) and its state dict without the `ignored` entries (non-weight buffers of the
    family), checked by `check_weights`. For shards the path is the index's."""
    path = next((directory / f for f in WEIGHT_FILES if (directory / f).is_file()), None)
    if path is None:
        raise ModelLoadError(f"{directory}: no weights ({' or '.join(WEIGHT_FILES)})")
    state = _shards(path) if path.name in SHARD_INDEXES else _read(path)
    state = {k: v for k, v in state.items() if not ignored(k)}
    check_weights(state, path)
    return path, state


def _read(path: Path) -> dict[str, torch.Tensor]:
    """One weights file, safetensors or a (weights-only) pickle, by its suffix."""
    return _safetensors(path) if path.suffix == ".safetensors" else _pickle(path)


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except SafetensorError as err:
        raise ModelLoadError(f"{path}: not a readable safetensors file ({err}); it may be empty or "
                             "truncated: download it again") from None


def _shards(index: Path) -> dict[str, torch.Tensor]:
    """The state dict of the shards that `index` maps each tensor to; each shard must be a file of
    the index's format beside it (a plain name: no path leads out of the folder), exist, and hold
    the tensors mapped to it and no tensor mapped elsewhere (so no tensor is in two shards)."""
    suffix = SHARD_INDEXES[index.name]
    try:
        weight_map = json.loads(index.read_bytes().decode("utf-8"))["weight_map"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ModelLoadError(f"{index}: not a shard index ({type(err).__name__}); it must be a JSON "
                             'object with a "weight_map" of tensor names to shard files') from None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelLoadError(f"{index}: weight_map must map tensor names to {suffix} files beside it")
    for key, name in weight_map.items():
        if not (isinstance(name, str) and name.endswith(suffix) and Path(name).name == name and "\\" not in name
                and name != suffix):
            raise ModelLoadError(f"{index}: maps {key} to {name!r}, which is not a {suffix} file name beside the "
                                 "index; a shard must be a plain file name in the same folder")
    state = {}
    for name in dict.fromkeys(weight_map.values()):
        shard = index.parent / name
        if not shard.is_file():
            raise ModelLoadError(f"{index}: lists shard {name}, which is missing: download it again")
        tensors = _read(shard)
        expected = {key for key, f in weight_map.items() if f == name}
        if set(tensors) != expected:
            odd = sorted(set(tensors) ^ expected)
            raise ModelLoadError(f"{shard}: holds other tensors than {index.name} maps to it "
                                 f"({', '.join(odd[:MAX_NAMED])}); the shards and the index disagree")
        state.update(tensors)
    return state


def _pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        unsafe = _unsafe_globals(path)
        if unsafe:
            # torch's own message suggests weights_only=False, i.e. running the file's code: we do not
            raise ModelLoadError(f"{path}: unsafe pickle refused: it calls Python objects beyond tensors "
                                 f"({', '.join(unsafe[:MAX_NAMED])}); use a model.safetensors of this "
                                 "checkpoint instead") from None
        raise ModelLoadError(f"{path}: not a readable PyTorch checkpoint; it may be truncated") from None
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        raise ModelLoadError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}); it may "
                             "be empty or truncated: download it again") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path}: must hold a state dict (names → tensors), got {type(state).__name__}")
    return state


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (RuntimeError, ValueError, OSError, EOFError, pickle.UnpicklingError):
        return []


def check_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse integer tensors, NaN/Inf, and weights that are all zero (or whose embedding is)."""
    integer = [f"{k} ({t.dtype})" for k, t in state.items() if not t.is_floating_point()]
    if integer:
        raise ModelLoadError(f"{path}: tensors {first_names(integer)} are not floating-point; weights must "
                             "be float32, float16 or bfloat16")
    non_finite = [k for k, t in state.items() if not torch.isfinite(t).all()]
    if non_finite:
        raise ModelLoadError(f"{path}: tensors {first_names(non_finite)} hold NaN or Inf values; the "
                             "checkpoint is corrupt (or was saved after training diverged)")
    if not any(t.any() for t in state.values()):
        raise ModelLoadError(f"{path}: every weight is zero; this is an empty or uninitialised checkpoint")
    zero = [k for k, t in state.items() if k.endswith(EMBEDDING_KEYS) and not t.any()]
    if zero:
        raise ModelLoadError(f"{path}: the embedding {zero[0]} is all zero; every token would look the same")


def first_names(names: list[str]) -> str:
    more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
    return ", ".join(names[:MAX_NAMED]) + more
