"""The restart engine: rerun a model's blocks from a cached clean forward, with a component edited.

One clean forward (`clean_pass`) caches what enters every block; `blocks_from` reruns blocks
l..m of a batch from that cache (`Family.blocks_from`, the adapter's block forward) and `head`
reads the last position's logits. `run_noised` adds each run's noise to a component of block l
through a torch forward hook and runs the batch from block l on (`edited_finals`: block l in the
chunks its own estimate allows, a materialised state making them small, the blocks above in the
larger chunks of a plain block); `run_into_y` does the same for a component whose noise changes
the SSM's y linearly (`Point.into_y`: h, h_readout, write and B of Mamba-2 and of a hybrid's
Mamba-2 layers): block l runs once, clean, and each run's y
is the clean y plus the family's `noise_into_y`, the block finished from it; `run_rays` does
the same for a component whose block output is affine in the noise (the family's
`Point.affine`: h, y, resid_post…): block l runs once per draw and every run restarts at block
l+1 from out_clean + level · (out(ε) − out_clean). On Mamba the block after that runs on the
rays too (`Family.next_on_rays`): its in_proj is computed once per draw, not once per run.

Batches are chunked to stay within ``max_bytes`` (estimated from shapes, `chunk_size`), and the
LM head runs on HEAD_ROWS residuals at a time. The noise sweep (`noise`), channel sensitivity
(`channels`) and patching build on these functions; whoever calls them holds the model's lock.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Sequence

import torch

from ..base.hooks import temporary_hooks
from ..handle.model import Model
from .record import record_pass

DEFAULT_MAX_BYTES = 128 * 2**20  # per chunk: small enough that the big SSM tensors reuse heap memory
HEAD_ROWS = 256  # rows per LM-head matmul: enough to amortise streaming its weight


@torch.no_grad()
def clean_pass(handle: Model, ids: torch.Tensor, layers: Sequence[int]):
    """The clean last-position logits [V] (exactly `Model.logits`) and the inputs of each layer.

    Returns (logits, {layer: entry}); an entry holds what `run_noised` needs to restart the
    forward at that layer: the residual [1, T, d] and, for GPT-2, the block's mask/position args
    (`engine.record`, the one recorder of a pass).
    """
    clean = record_pass(handle, ids, entries=layers)
    return clean.logits[0], clean.entries


@torch.inference_mode()
def run_noised(handle: Model, component: str, layer: int, entry, positions: Sequence[int], runs: list,
               noise: Callable, *, max_bytes: int = DEFAULT_MAX_BYTES) -> torch.Tensor:
    """Last-position logits [len(runs), V] of the forward restarted at `layer` with noise added.

    noise(chunk, clean_value) → [len(chunk), P, *feature]: called inside the hook with the
    clean component at the noised positions [P, *feature] (all batch rows are clean there).
    """
    if not runs:  # e.g. a read group of level-0 runs only
        return torch.empty(0, handle.vocab_size)
    idx = torch.tensor(list(positions))

    def edit(rows):
        def add(value):
            value[:, idx] += noise([runs[i] for i in rows], value[0, idx]).to(value.device, value.dtype)
        return add

    return head(handle, [edited_finals(handle, component, layer, entry, len(runs), edit, max_bytes)])


def edited_finals(handle: Model, component: str, layer: int, entry, n: int, edit: Callable,
                  max_bytes: int) -> torch.Tensor:
    """Last-position residuals [n, d] of n copies of the forward restarted at `layer`, rows
    `rows` (a range) with their component edited in place by the hook ``edit(rows)``.

    The edited block runs in the chunks its own estimate allows (`chunk_size` of the component:
    a materialised state makes them a few rows), the blocks above it in the larger chunks of a
    plain block, so that their matmuls run at a batch size that amortises streaming the weights.
    """
    resid = entry[0][0]
    size = chunk_size(handle, component, resid.shape[1], max_bytes)
    group = max(size, chunk_size(handle, None, resid.shape[1], max_bytes))
    last = layer == handle.n_layers - 1  # the final block carries the hook: it computes every position
    finals = []
    for start in range(0, n, group):
        stop = min(n, start + group)
        outs = []
        for first in range(start, stop, size):
            rows = range(first, min(stop, first + size))
            with temporary_hooks(handle.arch.hook(handle.module, component, layer, edit(rows))):
                outs.append(blocks_from(handle, layer, copies(resid, len(rows)), entry, stop=layer + 1))
        out = torch.cat(outs)
        if not last:
            out = blocks_from(handle, layer + 1, out, entry, last_only=True)
        finals.append(out[:, -1])
    return torch.cat(finals)


@torch.inference_mode()
def run_rays(handle: Model, component: str, layer: int, entry, positions: Sequence[int], runs: list,
             noise: Callable, *, max_bytes: int = DEFAULT_MAX_BYTES) -> torch.Tensor:
    """`run_noised` for an affine component (`Point.affine`) and runs (level, key) whose noise is level × that of (1, key).

    The injected block's output is then out_clean + level · r_key, with the response
    r_key = out(1, key) − out_clean: the block runs once per key (a ray: per trial, shared by
    its levels; a fresh draw: per run), and the batched forward restarts at the next block
    from these outputs.
    """
    if not runs:  # e.g. a read group of level-0 runs only
        return torch.empty(0, handle.vocab_size)
    resid = entry[0][0]
    clean = blocks_from(handle, layer, resid, entry, stop=layer + 1)
    size = chunk_size(handle, None, resid.shape[1], max_bytes)
    arch, module = handle.arch, handle.module
    next_on_rays = arch.next_on_rays(module, layer)
    if next_on_rays:
        clean_proj = arch.ray_projection(module, layer + 1, clean)
    keys = list(dict.fromkeys(key for _, key in runs))
    finals = [None] * len(runs)
    # responses are held `size` keys at a time: a few rays' responses serve every run, while fresh draws
    # have one key per run and a read group's worth would not fit for a long prompt
    for k in range(0, len(keys), size):
        row = {key: i for i, key in enumerate(keys[k:k + size])}
        unit = hooked_chunks(handle, component, layer, entry, positions, [(1.0, key) for key in row], noise,
                             max_bytes, stop=layer + 1)
        response = torch.cat(unit) - clean
        if next_on_rays:
            response_proj = arch.ray_projection(module, layer + 1, response)
        mine = [i for i, (_, key) in enumerate(runs) if key in row]
        for start in range(0, len(mine), size):
            chunk = [runs[i] for i in mine[start:start + size]]
            level = torch.tensor([lv for lv, _ in chunk], dtype=response.dtype, device=response.device)
            idx = [row[key] for _, key in chunk]
            inputs = torch.addcmul(clean, level[:, None, None], response[idx])
            if next_on_rays:
                inputs = arch.block_on_rays(module, layer + 1, inputs, level, clean_proj, response_proj[idx],
                                            last_only=layer + 2 == handle.n_layers)
            out = blocks_from(handle, layer + 2 if next_on_rays else layer + 1, inputs, entry, last_only=True)
            for i, final in zip(mine[start:start + size], out[:, -1]):
                finals[i] = final
    return head(handle, [torch.stack(finals)])


@torch.inference_mode()
def run_into_y(handle: Model, component: str, layer: int, entry, positions: Sequence[int], runs: list,
               noise: Callable, *, max_bytes: int = DEFAULT_MAX_BYTES) -> torch.Tensor:
    """`run_noised` for a component whose noise changes the SSM's y linearly (`Point.into_y`).

    The injected block runs once, clean, for its terms (`y_terms`); a run's y is the clean y
    plus the family's `noise_into_y` of its noise, and the block is finished from that y
    (`finals_from_y`): no run materialises the state. Runs are (level, key) with noise level ×
    that of (1, key), as for `run_rays`: each key's unit noise is drawn and carried into y once
    per block of rows, and the runs scale its change of y (a ray's levels share one draw).

    A run whose noise reaches sqrt(finfo.max) of the component's dtype (where y², taken
    by the gated RMSNorm, overflows) is rerun by `run_noised`: the scaled change of y
    stays finite where the noised state of the forward itself overflows (h + 1e38·ε is inf), and
    the sweep must flag that run's logits as the forward's are, not report the norm's finite
    output of an infinite y.
    """
    if not runs:
        return torch.empty(0, handle.vocab_size)
    terms = y_terms(handle, component, layer, entry)
    idx = list(positions)
    clean = terms[component][0, idx]
    # keys drawn at once: their noise and its read-out by C (no larger), not a materialised state
    size = max(1, max_bytes // (2 * 4 * clean.numel()))
    root, huge = torch.finfo(clean.dtype).max ** 0.5, set()

    def dy(rows):
        chunk = [runs[i] for i in rows]
        keys = list(dict.fromkeys(key for _, key in chunk))
        unit, peak = [], []
        for k in range(0, len(keys), size):
            values = noise([(1.0, key) for key in keys[k:k + size]], clean).to(clean.device, clean.dtype)
            peak += values.flatten(1).abs().amax(1).tolist()
            unit.append(handle.arch.noise_into_y(handle.module, layer, component, terms, idx, values))
        unit = torch.cat(unit)
        row = {key: i for i, key in enumerate(keys)}
        huge.update(i for i, (lv, key) in zip(rows, chunk) if not lv * peak[row[key]] < root)
        level = torch.tensor([lv for lv, _ in chunk], dtype=unit.dtype, device=unit.device)
        return unit[[row[key] for _, key in chunk]] * level.view(-1, *[1] * (unit.dim() - 1))

    logits = head(handle, [finals_from_y(handle, component, layer, entry, terms, len(runs), dy, max_bytes)])
    if huge:
        rerun = sorted(huge)
        logits[rerun] = run_noised(handle, component, layer, entry, positions, [runs[i] for i in rerun], noise,
                                   max_bytes=max_bytes).to(logits.dtype)
    return logits


def y_terms(handle: Model, component: str, layer: int, entry) -> dict:
    """The clean block `layer`'s `Family.into_y_points` and `component` ({name: [1, T, ...]}),
    read by torch hooks in one forward of that block (the component's hook materialises the
    state, so y is read out of it, as in a noised run)."""
    arch, terms = handle.arch, {}

    def keep(name):
        return lambda value: terms.update({name: value.clone()})

    names = dict.fromkeys(arch.into_y_points + (component,))
    with temporary_hooks(*[arch.hook(handle.module, name, layer, keep(name)) for name in names]):
        blocks_from(handle, layer, entry[0][0], entry, stop=layer + 1)
    return terms


def finals_from_y(handle: Model, component: str, layer: int, entry, terms: dict, n: int, dy: Callable,
                  max_bytes: int) -> torch.Tensor:
    """Last-position residuals [n, d] of block `layer` finished from y = clean y + dy(rows)
    (`Family.block_from_y`; dy(rows) [len(rows), T, ...] for a range of the n rows, at most a
    plain block's chunk, within which dy keeps to the component's estimate) and the blocks above."""
    resid = entry[0][0]
    group = max(chunk_size(handle, component, resid.shape[1], max_bytes),
                chunk_size(handle, None, resid.shape[1], max_bytes))
    finals = []
    for start in range(0, n, group):
        rows = range(start, min(n, start + group))
        out = handle.arch.block_from_y(handle.module, layer, terms, resid, terms["y"] + dy(rows))
        if layer < handle.n_layers - 1:
            out = blocks_from(handle, layer + 1, out, entry, last_only=True)
        finals.append(out[:, -1])
    return torch.cat(finals)


def hooked_chunks(handle: Model, component: str, layer: int, entry, positions: Sequence[int], runs: list,
                  noise: Callable, max_bytes: int, **span) -> list[torch.Tensor]:
    """Per chunk of runs, the residual after blocks from `layer` (`blocks_from` arguments
    `span`: stop, last_only) with each run's noise added to the component at `positions`."""
    resid = entry[0][0]
    size = chunk_size(handle, component, resid.shape[1], max_bytes)
    out = []
    for start in range(0, len(runs), size):
        chunk = runs[start:start + size]
        with injected(handle, component, layer, positions, lambda value, chunk=chunk: noise(chunk, value)):
            out.append(blocks_from(handle, layer, copies(resid, len(chunk)), entry, **span))
    return out


def chunk_size(handle: Model, component: str | None, T: int, max_bytes: int) -> int:
    """Runs per chunk; component None: no hook, the forward of the blocks after the injected one."""
    point = None if component is None else handle.arch.find(component)
    per_item = handle.layer_bytes(T, ssm=point is not None and point.ssm)
    if per_item > max_bytes:
        raise ValueError(f"one noised forward needs about {per_item / 2**20:.0f} MiB, more than "
                         f"max_bytes={max_bytes / 2**20:.0f} MiB; raise max_bytes or shorten the prompt")
    return max(1, max_bytes // per_item)


def blocks_from(handle: Model, start: int, resid: torch.Tensor, entry, stop: int | None = None,
                last_only: bool = False) -> torch.Tensor:
    """The residual [b, T, d] after blocks start..stop-1 (default: to the last block), from the
    clean forward's cached `entry` (`Family.blocks_from`).

    last_only: the model's final block (Mamba; it must carry no hook) computes its output at
    the last position only, [b, 1, d], which is all the LM head reads.
    """
    return handle.arch.blocks_from(handle.module, start, resid, entry, stop=stop, last_only=last_only)


def copies(resid: torch.Tensor, b: int) -> torch.Tensor:
    """b writable copies of the residual [1, T, d]: the hooks edit the batch in place."""
    return resid.repeat(b, *[1] * (resid.dim() - 1))


def head(handle: Model, finals: list, columns: list[int] | None = None) -> torch.Tensor:
    """Logits [N, V] from the last-position residuals of every chunk; with `columns` (token IDs)
    only theirs, [N, len(columns)] (`Family.head`).

    The LM head streams its whole weight (154 MB at a 50k vocabulary) per matmul, so it runs
    on HEAD_ROWS residuals at a time rather than once per chunk of a few runs.
    """
    width = handle.vocab_size if columns is None else len(columns)
    if not finals:
        return torch.empty(0, width)
    resid = torch.cat(finals)
    return torch.cat([handle.arch.head(handle.module, resid[i:i + HEAD_ROWS], columns)[:, :width].float()
                      for i in range(0, len(resid), HEAD_ROWS)])


@contextmanager
def injected(handle, component, layer, positions, noise):
    """Within: the component at `layer` gets noise(clean_value) added at `positions`, in place."""
    idx = torch.tensor(list(positions))

    def add(value):
        value[:, idx] += noise(value[0, idx]).to(value.device, value.dtype)

    # a torch hook that edits the component in place, as ``point(...)[:, pos] += noise`` does in a trace
    with temporary_hooks(handle.arch.hook(handle.module, component, layer, add)):
        yield
