"""Argument checks shared by the analyses (noise sweeps, patching, causal tracing, knockout, hidden attention).

Each raises a ValueError that names the argument and the values it accepts, before any compute.
"""
from __future__ import annotations

import numpy as np
import torch

from ..base.checks import byte_budget, is_int, layer_list, position_list  # noqa: F401  (the analyses import them from here too)
from .loading import cached_model
from .model import Model, parse_dtype


def check_device(device) -> torch.device | None:
    """None, or `device` as a torch device; ValueError names the argument."""
    if device is None:
        return None
    if isinstance(device, torch.device):
        parsed = device
    elif isinstance(device, str):
        try:
            parsed = torch.device(device)
        except (RuntimeError, ValueError):
            raise ValueError(f"device: must be like 'cpu' or 'cuda:0', got {device!r}") from None
    else:
        raise ValueError(f"device: must be a string like 'cpu' or 'cuda:0', a torch.device or None, got {device!r}")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {str(parsed)!r} asks for CUDA, which this torch ({torch.__version__}) cannot use "
                         "here; pass device='cpu'")
    return parsed


def handle_of(model, dtype=None, device=None) -> Model:
    """A loaded `Model`, or one loaded (once per process) from a source string, in `dtype`
    (None: float32) on `device` (None: CUDA when available) — a dtype or device for an already
    loaded model must be the one it has."""
    if isinstance(model, Model):
        if dtype is not None and parse_dtype(dtype) != model.dtype:
            raise ValueError(f"dtype={dtype!r}: model is already loaded, in {model.dtype}; dtype applies to a "
                             "model given by source (or load it with load_model(..., dtype=...))")
        wanted = check_device(device)
        if wanted is not None and not _same_device(wanted, model.device):
            raise ValueError(f"device={device!r}: model {model.name} is already loaded, on {model.device}; device "
                             "applies to a model given by source (or load it with load_model(..., device=...))")
        return model
    if isinstance(model, str):
        return cached_model(model, device=check_device(device), dtype=dtype)
    raise ValueError(f"model must be a loaded Model or a source string for compare.load_model "
                     f"(or a list of them), got {type(model).__name__}")


def handles_of(model, dtype=None, device=None) -> list[Model]:
    """One model or a list of them (results side by side), each checked by `handle_of`."""
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    if not models:
        raise ValueError("model must be a Model, a source string, or a non-empty list of them")
    parse_dtype(dtype)  # checked even when every model is a loaded handle
    check_device(device)
    handles = [handle_of(m, dtype, device) for m in models]
    names = [h.name for h in handles]
    if len(set(names)) < len(names):
        raise ValueError(f"model: each model must appear once (the results name them), got {names}")
    return handles


def _same_device(wanted: torch.device, actual: torch.device) -> bool:
    if wanted.type != actual.type:
        return False
    return wanted.index is None or actual.index is None or wanted.index == actual.index


def prompt_ids(handle: Model, prompt, what: str = "prompt") -> torch.Tensor:
    """[1, T] token IDs of text or of IDs [T] (checked by `Model.as_input`)."""
    if isinstance(prompt, str):
        if not prompt:
            raise ValueError(f"{what} must be a non-empty string or token IDs [T], got ''")
        ids = handle.encode(prompt)
        if not ids:
            raise ValueError(f"{what}: {prompt[:40]!r} is no tokens in {handle.name}'s tokenizer (it drops whitespace "
                             "and what it cannot read); give text of at least one token, or token IDs [T]")
        return handle.as_input(ids)
    try:
        ids = handle.as_input(prompt)
    except TypeError as err:  # None, bytes, a dict, floats: `integer_ids` says which value
        raise TypeError(f"{what} must be a non-empty string or token IDs [T]; {err}") from None
    if ids.shape[0] != 1:
        raise ValueError(f"{what} must be one sequence (text or token IDs [T]), got shape {tuple(ids.shape)}")
    return ids


def token_id(handle: Model, token, what: str) -> int:
    """A one-token string (" Mary") or a token ID of `handle`'s vocabulary."""
    if isinstance(token, str):
        return handle.single_token(token, what=what)
    if isinstance(token, (int, np.integer)) and not isinstance(token, bool) and 0 <= token < handle.vocab_size:
        return int(token)
    raise ValueError(f"{what} must be a one-token string or a token ID in 0..{handle.vocab_size - 1} "
                     f"for {handle.name}, got {token!r}")
