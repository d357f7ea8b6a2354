"""Hook points: named identity modules that make an activation addressable by nnsight.

Every quantity a researcher may read or edit passes through a `HookPoint`, so in a trace it is
``handle.nn.layers[l].mixer.hook_h.output`` — the TransformerLens idea (one predictable name per
activation) expressed as plain modules, which is all nnsight needs.

`requested` lets a module skip materialising an expensive activation (the Mamba state h is
[b, l, d_in, n]) when no running trace reads or edits it.
"""
from __future__ import annotations

import torch
from torch import nn

try:  # nnsight's per-module trace state; absent or renamed => always materialise (slow, never wrong)
    from nnsight.intervention.source import STATE as _NNSIGHT_STATE
except ImportError:  # pragma: no cover - depends on the installed nnsight
    _NNSIGHT_STATE = None


class HookPoint(nn.Module):
    """Identity on its input; exists to be hooked."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def requested(self) -> bool:
        """True when an nnsight trace running now waits on, or caches, this point.

        nnsight runs intervention code in execution order: by the time the model reaches this
        point, a worker that wants it is already parked on its location. A plain torch forward
        hook on the point counts as a request too, for batched code that bypasses nnsight.
        """
        if self._forward_hooks or self._forward_pre_hooks:
            return True
        if _NNSIGHT_STATE is None:
            return True
        state = self.__dict__.get(_NNSIGHT_STATE)
        if state is None:
            return False
        try:
            interleaver, _, locations = state.active()
        except Exception:  # an nnsight version with another State layout
            return True
        if interleaver is None:
            return False
        parked = getattr(interleaver, "parked", None)
        observers = getattr(interleaver, "observers", None)
        if parked is None or observers is None:
            return True
        return any(loc in parked or observers.get(loc) for loc in locations)
