"""Argument checks shared by the analyses (noise sweeps, patching, causal tracing, knockout, hidden attention).

Each raises a ValueError that names the argument and the values it accepts, before any compute.
"""
from __future__ import annotations

import numpy as np
import torch

from .loading import cached_model
from .model import Model, parse_dtype


def handle_of(model, dtype=None) -> Model:
    """A loaded `Model`, or one loaded (once per process) from a source string, in `dtype`
    (None: float32) — a dtype for an already loaded model must be the one it has."""
    if isinstance(model, Model):
        if dtype is not None and parse_dtype(dtype) != model.dtype:
            raise ValueError(f"dtype={dtype!r}: model is already loaded, in {model.dtype}; dtype applies to a "
                             "model given by source (or load it with load_model(..., dtype=...))")
        return model
    if isinstance(model, str):
        return cached_model(model, dtype=dtype)
    raise ValueError(f"model must be a loaded Model or a source string for compare.load_model, "
                     f"got {type(model).__name__}")


def handles_of(model) -> list[Model]:
    """One model or a list of them (results side by side), each checked by `handle_of`."""
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    if not models:
        raise ValueError("model must be a Model, a source string, or a non-empty list of them")
    handles = [handle_of(m) for m in models]
    names = [h.name for h in handles]
    if len(set(names)) < len(names):
        raise ValueError(f"model: each model must appear once (the results name them), got {names}")
    return handles


def prompt_ids(handle: Model, prompt, what: str = "prompt") -> torch.Tensor:
    """[1, T] token IDs of text or of IDs [T] (checked by `Model.as_input`)."""
    if isinstance(prompt, str):
        if not prompt:
            raise ValueError(f"{what} must be a non-empty string or token IDs [T], got ''")
        return handle.as_input(handle.encode(prompt))
    ids = handle.as_input(prompt)
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


def is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def byte_budget(max_bytes) -> int:
    """A `max_bytes` argument (a memory budget) as a Python int ≥ 1."""
    if not is_int(max_bytes) or max_bytes < 1:
        raise ValueError(f"max_bytes: must be an integer number of bytes ≥ 1, got {max_bytes!r}")
    return int(max_bytes)


def layer_list(handle: Model, layers, what: str = "layers", *, point: str | None = None) -> tuple[int, ...]:
    """Layers as a tuple of unique ints in 0..L-1 (None: all).

    point: the layers must have this point (a hybrid's `pattern` only its attention layers):
    None means every layer that has it, and a listed layer without it is refused naming its kind.
    """
    L = handle.n_layers
    if layers is None:
        return tuple(range(L)) if point is None else handle.arch.layers_with(handle.module, point)
    values = [layers] if is_int(layers) else layers
    try:
        values = list(values)
    except TypeError:
        raise ValueError(f"{what} must be ints in 0..{L - 1} for {handle.name} or None for all, got {layers!r}") from None
    bad = [v for v in values if not (is_int(v) and -L <= v < L)]
    if not values or bad:
        raise ValueError(f"{what} must be a non-empty list of ints in 0..{L - 1} (negative counts from the end) for "
                         f"{handle.name} or None for all, got {layers!r}")
    chosen = tuple(dict.fromkeys(int(v) % L for v in values))
    if point is not None:
        having = handle.arch.layers_with(handle.module, point)
        lacking = [l for l in chosen if l not in having]
        if lacking:
            raise ValueError(f"{what}: layer {lacking[0]} of {handle.name} is an {handle.layer_kind(lacking[0])} layer "
                             f"and has no {point!r}; the layers that have it: {list(having)}")
    return chosen


def position_list(values, T: int, what: str = "positions", *, empty: bool = False) -> tuple[int, ...]:
    """Unique token positions in 0..T-1 (negative counts from the end)."""
    values = [values] if is_int(values) else values
    try:
        values = list(values)
    except TypeError:
        raise ValueError(f"{what} must be token positions in {-T}..{T - 1}, got {values!r}") from None
    bad = [v for v in values if not (is_int(v) and -T <= v < T)]
    if bad or (not values and not empty):
        raise ValueError(f"{what} must be {'' if empty else 'a non-empty list of '}token positions in {-T}..{T - 1} "
                         f"for this {T}-token prompt, got {values!r}")
    return tuple(dict.fromkeys(int(v) % T for v in values))
