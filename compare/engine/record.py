"""The one recorder of a forward pass: what an analysis reads of a run before it edits or reruns it.

`record_pass` runs one forward of a prompt while holding the model's lock and keeps, by torch hooks
that exist only during that forward (`base.hooks.temporary_hooks`):

    points    copies of hook points, {(name, layer): value} (layer None for a model-level point)
    entries   what the model passed each block of `entries`, {layer: (args, kwargs)}: the residual
              [b, T, d] and, for transformers, the mask and position arguments; `restart` reruns
              blocks from these (`Family.blocks_from`)
    logits    the logits at `logits_at`, exactly `Model.logits` there: by default the last
              position's [b, V]; the logit lens keeps those of its positions [b, P, V]

With `stop` the forward ends as it enters that block (or, at the number of layers, the final norm:
after every block), its entry kept and no logits computed: for a caller that runs the blocks from
there itself, or reads the logits it needs of the final residual (attribution patching).
`edits` are in-place edits of points made in the same forward (causal tracing's noised
embedding); a point both edited and recorded is recorded after the edit. The clean pass of the
noise sweep, channels, patching, causal tracing, hidden attention and attribution, and the one
forward of the logit lens and of the tuned lens's training, is this function.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from ..base.hooks import temporary_hooks
from ..handle.model import Model


class _Stopped(Exception):
    """Raised by the entry hook of `record_pass`'s `stop` block: the forward ends there."""


@dataclass(frozen=True)
class Recording:
    """What `record_pass` kept of one forward (module docstring)."""
    logits: torch.Tensor | None  # None: the forward was stopped before the head
    points: dict = field(default_factory=dict)
    entries: dict = field(default_factory=dict)

    def at(self, layer: int | None) -> dict[str, torch.Tensor]:
        """The points recorded at one layer, {name: value}."""
        return {name: value for (name, l), value in self.points.items() if l == layer}


@torch.no_grad()
def record_pass(handle: Model, ids: torch.Tensor, points: Iterable[tuple[str, int | None]] = (), *,
           entries: Iterable[int] = (), edits: Iterable[tuple[str, int | None, Callable]] = (),
           keep: Callable[[str, int | None, torch.Tensor], torch.Tensor] | None = None,
           stop: int | None = None, logits_at: int | list[int] | slice = -1) -> Recording:
    """One forward of ids [b, T] holding the model's lock (module docstring).

    points: (name, layer) pairs to keep; keep(name, layer, value) → what is kept of each (default
    a detached copy: the value itself may be edited or reused later in the forward).
    entries: the layers whose block inputs are kept (references, as the model passed them); n_layers:
    the final norm's input, the last block's output.
    edits: (name, layer, edit) with edit(value) changing the point in place during this forward.
    stop: a block at which the forward ends once its entry is kept, or n_layers: the final norm's
    (module docstring); logits None.
    logits_at: the positions whose logits are kept, an index of `Model.logits`' position axis: -1
    (default) the last [b, V], a list of positions [b, P, V], slice(None) every position [b, T, V].
    """
    arch, blocks = handle.arch, handle.arch.blocks(handle.module)
    kept, entered = {}, {}
    entries = set(entries) | ({stop} if stop is not None else set())
    keep = keep or (lambda name, layer, value: value.detach().clone())

    def keeper(name, layer):
        return lambda value: kept.__setitem__((name, layer), keep(name, layer, value))

    def enter(layer):
        def hook(module, args, kwargs):
            entered[layer] = (args, kwargs)
            if layer == stop:
                raise _Stopped
        return hook

    with handle.lock:  # the hooks exist only while this call owns the model (`isolation`)
        with temporary_hooks(*[arch.hook(handle.module, name, layer, edit) for name, layer, edit in edits]) as hooks:
            hooks.extend(arch.hook(handle.module, name, layer, keeper(name, layer)) for name, layer in points)
            hooks.extend((blocks[l] if l < len(blocks) else arch.final_norm(handle.module)).register_forward_pre_hook(
                enter(l), with_kwargs=True) for l in entries)
            try:
                logits = handle.logits(ids)[:, logits_at]
            except _Stopped:
                logits = None
    return Recording(logits, kept, entered)
