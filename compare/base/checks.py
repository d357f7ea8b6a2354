"""Argument checks shared by the engine's entry points: integers, memory budgets, layer and position
lists, the progress and stop callbacks.

Each raises a ValueError that names the argument and the values it accepts, before any compute. This
module imports nothing of the package, so every layer may use it.
"""
from __future__ import annotations

import numpy as np


def is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def byte_budget(max_bytes) -> int:
    """A `max_bytes` argument (a memory budget) as a Python int ≥ 1."""
    if not is_int(max_bytes) or max_bytes < 1:
        raise ValueError(f"max_bytes: must be an integer number of bytes ≥ 1, got {max_bytes!r}")
    return int(max_bytes)


def layer_list(handle, layers, what: str = "layers", *, point: str | None = None) -> tuple[int, ...]:
    """Layers as a tuple of unique ints in 0..L-1 (None: all); `handle` gives `n_layers` and `name`.

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


def check_callbacks(progress, stop) -> None:
    """The progress and stop arguments of the engine's long calls (sweeps, channels, compare)."""
    if progress is not None and not callable(progress):
        raise ValueError(f"progress: must be a callable (done, total) or None, got {progress!r}")
    if stop is not None and not callable(getattr(stop, "is_set", None)):
        raise ValueError(f"stop: must have an is_set() method (e.g. a threading.Event) or be None, got {stop!r}")
