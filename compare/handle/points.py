"""The hook-point registry as the rest of the package sees it: one name per activation, the same
names in every tool of the package, each family's points described once by its adapter
(`families`: where each point lives, its shape, whether it may be noised).

Mamba's points are `HookPoint` modules of our own tree (`compare.ssm.mamba`); GPT-2 and Pythia keep
transformers' module tree and their points are read off module inputs/outputs (plus the
q/k/v/pattern hook points Pythia's attention function calls), which is all nnsight needs.
"""
from __future__ import annotations


def check(handle, component: str, layer: int | None) -> None:
    """Raise a ValueError naming the valid components / layers for this model."""
    arch = handle.arch
    if component not in arch.names:
        raise ValueError(f"{handle.name}: unknown component {component!r}; valid: {', '.join(arch.names)}")
    if not arch.point(component).per_layer:
        if layer is not None:
            raise ValueError(f"{handle.name}: '{component}' is a model-level point; pass layer=None")
        return
    if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < handle.n_layers:
        raise ValueError(f"{handle.name}: layer must be an int in 0..{handle.n_layers - 1} for "
                         f"'{component}', got {layer!r}")
    if component not in arch.points_at(handle.module, layer):
        raise ValueError(f"{handle.name}: layer {layer} is an {handle.layer_kind(layer)} layer and has no "
                         f"'{component}'; the layers that have it: "
                         f"{list(arch.layers_with(handle.module, component))}")


def get(handle, component: str, layer: int | None = None):
    """The live value of a point inside a trace on ``handle.nn``; in-place edits intervene."""
    check(handle, component, layer)
    return handle.arch.trace_value(handle.nn, component, layer)
