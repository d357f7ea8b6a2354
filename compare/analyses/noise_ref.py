"""The slow, obvious twin of `noise.noise_sweep`: one nnsight trace per (layer, level, trial).

Each run is the trace a user would write by hand::

    with handle.nn.trace(ids):
        value = handle.point(component, layer)
        value[:, positions] += level · unit · ε
        logits = handle.point("logits").save()

It shares only argument checking, the noise draw and the row format with the fast path, so
tests can hold the batched engine (cached prefix, torch hooks, chunking, last-position LM head)
against it. It is also the naive baseline of `benchmarks/bench_noise.py`.
"""
from __future__ import annotations

import torch

from .noise import Draw, prepare, sweep_noise
from ..engine.prediction import rows, to_frame


def noise_sweep_ref(prompt, *, model, target, component, layers=None, levels=None, trials=1,
                    distribution="gaussian", scale="absolute", positions=None, seed=0, draws="fresh"):
    """Same arguments and result as `noise.noise_sweep` (without the memory budget)."""
    sweep = prepare(prompt, model=model, target=target, component=component, layers=layers,
                    levels=levels, trials=trials, distribution=distribution, scale=scale,
                    positions=positions, seed=seed, draws=draws)
    frames = []
    for layer in sweep.layers:
        logits = torch.stack([traced_run(sweep, layer, level, key) for level, key in sweep.runs])
        frames.append(rows(sweep, layer, sweep.runs, logits))
    return to_frame(sweep, frames)


@torch.no_grad()
def traced_run(sweep, layer: int, level: float, key: Draw) -> torch.Tensor:
    """Last-position logits [V] of one noised forward, written as a plain nnsight trace; `key`
    names its ε (`noise.Draw`)."""
    handle, idx = sweep.handle, list(sweep.positions)
    with handle.nn.trace(sweep.ids):
        value = handle.point(sweep.component, layer)
        noise = sweep_noise(sweep, layer, [(level, key)], value[0, idx])[0]
        value[:, idx] += noise.to(value.device, value.dtype)
        logits = handle.point("logits").save()
    return logits[0, -1, : handle.vocab_size].float()
