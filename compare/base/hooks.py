"""Hook points: named identity modules that make an activation addressable by nnsight.

Every quantity a researcher may read or edit passes through a `HookPoint`, so in a trace it is
``handle.nn.layers[l].mixer.hook_h.output`` — the TransformerLens idea (one predictable name per
activation) expressed as plain modules, which is all nnsight needs.

`requested` lets a module skip materialising an expensive activation (the Mamba state h is
[b, l, d_in, n]) when nothing reads or edits it. The decision is explicit where it can be:
    a torch hook on the point              requested (the batched engines hook what they noise)
    no trace of ours running (`tracing`)   not requested: a plain forward never materialises
    inside a trace on `Model.nn`           requested when nnsight has a worker waiting on the point
The last question has no public answer in nnsight, so it reads its per-module state (`STATE`,
the interleaver's `parked` and `observers`; the pinned range in pyproject.toml). If that layout
changes, traces materialise every point (slow, never wrong) with a warning, plain forwards and
sweeps are untouched, and `tests/unit/test_hooks.py` fails on `nnsight_layout_ok`.
"""
from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager

import torch
from torch import nn

try:  # nnsight's per-module trace state
    from nnsight.intervention.source import STATE as _NNSIGHT_STATE
except ImportError:  # pragma: no cover - depends on the installed nnsight
    _NNSIGHT_STATE = None

_LOCAL = threading.local()  # traces of ours running in this thread (nnsight's greenlets share it)


@contextmanager
def tracing():
    """Marks a trace on `Model.nn` as running in this thread (`isolation.LockedTracer`)."""
    _LOCAL.depth = getattr(_LOCAL, "depth", 0) + 1
    try:
        yield
    finally:
        _LOCAL.depth -= 1


def in_trace() -> bool:
    return getattr(_LOCAL, "depth", 0) > 0


class HookPoint(nn.Module):
    """Identity on its input; exists to be hooked."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def requested(self) -> bool:
        """True when a torch hook is on this point, or a trace running now waits on, or caches, it.

        nnsight runs intervention code in execution order: by the time the model reaches this
        point, a worker that wants it is already parked on its location.
        """
        if self._forward_hooks or self._forward_pre_hooks:
            return True
        if not in_trace():
            return False
        awaited = _awaited(self)
        if awaited is None:
            warnings.warn(f"nnsight {_nnsight_version()} keeps its trace state in another layout than the "
                          "supported range (pyproject.toml); traces now materialise every hook point "
                          "(correct, slower)", RuntimeWarning, stacklevel=2)
            return True
        return awaited


def _awaited(module: nn.Module) -> bool | None:
    """Whether an nnsight worker waits on `module` now; None when nnsight's layout is not the known one."""
    if _NNSIGHT_STATE is None:
        return None
    state = module.__dict__.get(_NNSIGHT_STATE)
    if state is None:
        return False
    try:
        interleaver, _, locations = state.active()
    except Exception:  # an nnsight version with another State layout
        return None
    if interleaver is None:
        return False
    parked = getattr(interleaver, "parked", None)
    observers = getattr(interleaver, "observers", None)
    if parked is None or observers is None:
        return None
    return any(loc in parked or observers.get(loc) for loc in locations)


def nnsight_layout_ok() -> bool:
    """The private nnsight details `requested` reads exist in the installed version."""
    from nnsight.intervention.interleaver import Interleaver
    from nnsight.intervention.source import State

    fields = Interleaver.__init__.__code__.co_names
    return (_NNSIGHT_STATE is not None and callable(getattr(State, "active", None))
            and "parked" in fields and "observers" in fields)


def _nnsight_version() -> str:
    from importlib.metadata import version

    return version("nnsight")


class TemporaryHooks:
    """The torch hook handles registered inside a `temporary_hooks` block (anything with ``remove()``)."""

    def __init__(self, handles=()):
        self.handles = list(handles)

    def add(self, handle):
        """Keep `handle` to remove on exit; returns it."""
        self.handles.append(handle)
        return handle

    def extend(self, handles) -> None:
        self.handles.extend(handles)

    def remove(self) -> None:
        """Remove every hook kept, last added first; each one even when another's removal fails."""
        handles, self.handles = self.handles, []
        errors = []
        for handle in reversed(handles):
            try:
                handle.remove()
            except Exception as error:  # pragma: no cover - torch's RemovableHandle does not raise
                errors.append(error)
        if errors:
            raise errors[0]


@contextmanager
def temporary_hooks(*handles):
    """The one way to hook for a while: hooks given here or added inside (``hooks.add(...)``,
    ``hooks.extend([...])``) are removed on exit, also when the block raises.

        with temporary_hooks(*[arch.hook(module, "h", l, keep) for l in layers]) as hooks:
            hooks.add(arch.hook(module, "embed", None, add))
            handle.logits(ids)
    """
    hooks = TemporaryHooks(handles)
    try:
        yield hooks
    finally:
        hooks.remove()
