"""The slow, obvious twin of `patching.patch_sweep`: one nnsight trace per patch.

The clean run is one trace saving the component at every swept layer; each patch is the trace
a user would write by hand::

    with handle.nn.trace(corrupt_ids):
        value = handle.point(component, layer)
        value[:, positions] = clean_value[:, positions]
        logits = handle.point("logits").save()

and m_clean, m_corrupt come from `Model.logits`. It shares only argument checking, the metric
and the row format with the fast path, so tests can hold the batched engine (cached prefix,
torch hooks, chunking, Mamba's `h` restart, one LM-head call) against it. It is also the naive
baseline of `benchmarks/bench_patching.py`.
"""
from __future__ import annotations

import pandas as pd
import torch

from .patching import COLUMNS, Patching, metric_of, prepare, recovery


def patch_sweep_ref(clean, corrupt, *, model, answer, wrong=None, component, layers=None, positions=None,
                    metric="logit_diff") -> pd.DataFrame:
    """Same arguments and rows as `patching.patch_sweep` (without the memory budget and callbacks)."""
    frames = []
    for sweep in prepare(clean, corrupt, model=model, answer=answer, wrong=wrong, component=component,
                         layers=layers, positions=positions, metric=metric):
        handle = sweep.handle
        m_clean, m_corrupt = (float(metric_of(handle.logits(ids)[:, -1], sweep.metric, sweep.answer, sweep.wrong)[0])
                              for ids in (sweep.clean, sweep.corrupt))
        src = clean_values(sweep)
        for layer in sweep.layers:
            logits = torch.stack([traced_patch(sweep, layer, src[layer], patch) for patch in sweep.patches])
            m = metric_of(logits, sweep.metric, sweep.answer, sweep.wrong)
            frames.append(pd.DataFrame({"model": handle.name, "layer": layer, "kind": handle.layer_kind(layer),
                                        "position": list(sweep.labels),
                                        "component": sweep.component, "metric_patched": m,
                                        "recovery": recovery(m, m_clean, m_corrupt)}))
    return pd.concat(frames, ignore_index=True)[list(COLUMNS)]


@torch.no_grad()
def clean_values(sweep: Patching) -> dict[int, torch.Tensor]:
    """The component at every swept layer of the clean run, from one trace."""
    handle = sweep.handle
    saved = {}
    with handle.nn.trace(sweep.clean):
        for layer in sorted(sweep.layers):  # in forward order: a trace reads points as the model reaches them
            saved[layer] = handle.point(sweep.point, layer).save()
    return {layer: value.detach().clone() for layer, value in saved.items()}


@torch.no_grad()
def traced_patch(sweep: Patching, layer: int, src: torch.Tensor, patch: tuple[int, ...]) -> torch.Tensor:
    """Last-position logits [V] of the corrupt run with `patch`'s positions of the component at
    `layer` set to the clean values, written as a plain nnsight trace."""
    handle, idx, features = sweep.handle, list(patch), sweep.feature_slice()
    with handle.nn.trace(sweep.corrupt):
        if idx:
            value = handle.point(sweep.point, layer)
            value[:, idx, ..., features] = src[:, idx, ..., features]
        logits = handle.point("logits").save()
    return logits[0, -1, : handle.vocab_size].float()
