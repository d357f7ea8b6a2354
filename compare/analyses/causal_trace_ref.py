"""The slow, obvious twin of `causal_trace.causal_trace`: one nnsight trace per (layer, position).

The clean run is one trace saving the component at every layer; each restoration is the trace a
user would write, over the `samples` noised copies at once::

    with handle.nn.trace(ids.repeat(samples, 1)):
        handle.point("embed")[:, subject] += σ · ε
        for l in window:
            handle.point(component, l)[:, position] = clean[l][:, position]
        logits = handle.point("logits").save()

It shares argument checking, the draws ε (`Trace.epsilon`) and the row format with the fast path.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .causal_trace import COLUMNS, Trace, prepare


def causal_trace_ref(prompt, subject, *, model, samples=10, noise=3.0, window=1, seed=0, component="resid_post",
                     answer=None) -> pd.DataFrame:
    """Same arguments (without the memory budget and callbacks) and rows as `causal_trace`."""
    frames = []
    for trace in prepare(prompt, subject, model=model, samples=samples, noise=noise, window=window, seed=seed,
                         component=component, answer=answer):
        handle = trace.handle
        clean, embed = clean_values(trace)
        sigma = trace.noise * embed[0, list(trace.subject)].float().std().item()
        noise_values = sigma * trace.epsilon(embed.shape[-1])
        p_corrupt = traced_probability(trace, noise_values, clean, (), 0)
        tokens = handle.decode_tokens(trace.ids[0].tolist())
        for layer in trace.layers:
            p = np.array([traced_probability(trace, noise_values, clean, trace.window_of(layer), position)
                          for position in range(len(tokens))])
            frames.append(pd.DataFrame({"model": handle.name, "layer": layer, "kind": handle.layer_kind(layer),
                                        "position": range(len(tokens)),
                                        "token": tokens, "component": trace.component, "p_restored": p,
                                        "indirect_effect": p - p_corrupt}))
    return pd.concat(frames, ignore_index=True)[list(COLUMNS)]


@torch.no_grad()
def clean_values(trace: Trace):
    """The component at every layer, and the embeddings, of the clean run, from one trace."""
    handle, saved = trace.handle, {}
    with handle.nn.trace(trace.ids):
        saved["embed"] = handle.point("embed").save()
        for layer in trace.layers:
            saved[layer] = handle.point(trace.component, layer).save()
    return {l: saved[l].detach().clone() for l in trace.layers}, saved["embed"].detach().clone()


@torch.no_grad()
def traced_probability(trace: Trace, noise_values: torch.Tensor, clean, window, position: int) -> float:
    """The answer's probability at the last position, averaged over the noised draws, with the
    component restored at `position` in the layers of `window` (none: the corrupted run)."""
    handle, idx = trace.handle, list(trace.subject)
    with handle.nn.trace(trace.ids.repeat(trace.samples, 1)):
        handle.point("embed")[:, idx] += noise_values
        for layer in window:
            if layer in clean:  # a window's layers that have the component
                handle.point(trace.component, layer)[:, position] = clean[layer][:, position]
        logits = handle.point("logits").save()
    return torch.softmax(logits[:, -1, : handle.vocab_size].float(), -1)[:, trace.answer].mean().item()
