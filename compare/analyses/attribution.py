"""Attribution patching (Nanda 2023; Syed et al. 2023): activation patching to first order, every
(component, layer, position) at once.

Exact patching (`patching.patch_sweep`) replaces a component a at some positions of the corrupt
run by its clean value and reruns the model: one forward per (layer, patch). Its first-order
Taylor estimate about the corrupt run is

    m_patched − m_corrupt ≈ Σ_{p in patch} ∂m/∂a_p · (a_clean,p − a_corrupt,p)

with the gradient taken on the corrupt run. So one forward of the clean prompt (recording a),
one of the corrupt prompt and one backward give every estimate of every component. The frame
is `patch_sweep`'s, with `estimate` = the right-hand side, and `metric_patched` = m_corrupt +
estimate and `recovery` = estimate / (m_clean − m_corrupt) the estimates of those columns.

The gradient is that of an edit as the hook point reads it (`Point.grad_at`): on Mamba an edit
of `h` enters the recurrence as an increment of the write, h'_t = Ā_t h'_{t-1} + w_t + e_t, so
its gradient is ∂m/∂w_t = g_t, which `scan.LinearScan`'s backward computes as the reverse scan
g_t = ∂m/∂h_t + Ā_{t+1} g_{t+1}: the estimate follows the patched state through every later
position, as the exact sweep's wavefront does.

The estimate is exact where the metric is affine in the patched value: with the metrics
"logit" and "logit_diff" (with `wrong`), on a model whose final norm is the identity, for the
last layer's resid_post, mixer_out or mlp_out, attn_out where the MLP runs in parallel
(Pythia; GPT-2's MLP reads it), and Mamba's y and h, at the last position (y_T = C_T · h_T +
D x_T is linear in h_T, and the gate does not depend on either). Elsewhere the nonlinearity
between the component and the metric (norms, attention softmax, SiLU gates, the selection of
Mamba's Δ, B, C) makes it an approximation; `tests/unit/test_attribution.py` measures its
correlation with the exact sweep.

Along a path (``steps=k``, k ≥ 2): where the patched value is far from the corrupt one the
gradient at the corrupt run is a poor slope. On the tiny Pythia of the tests the IOI pair's
layer-0 residual at the changed token differs by 1.4× the residual's own norm (another token's
embedding), and the metric along the straight line from the corrupt to the clean value there
is not monotone (+0.015 at 60 %, −0.023 at 100 %); at the last position of layer 1 the query
of the attention softmax moves; and the whole effect, m_clean − m_corrupt, is only −0.023.
There plain attribution correlates 0.00 (resid_pre), 0.37 (attn_out), 0.22 (resid_post) with
the exact sweep, although its gradients match finite differences. With k steps the embedding is
moved from the corrupt to the clean input in k equal segments, every row of one batched forward
(row 0 the corrupt run, row k the clean run), and each point's estimate is its path integral by
the trapezoid rule,

    estimate_p ≈ Σ_j ½ (∂m/∂a_p(j) + ∂m/∂a_p(j+1)) · (a_p(j+1) − a_p(j)),

a's own path being the one the model induces (conductance, Dhamdhere et al. 2018; the
integrated gradients of Marks et al. 2024, with every layer's path from one batch rather than a
batch per layer). On a point every later computation reads only through (a residual point of
a layer), the estimates of all positions sum to m_clean − m_corrupt as k grows (the chain
rule along the path). Cost: the forward and the backward (and, block by block, the blocks'
rerun) of a batch of k + 1 rows instead of one row (and no separate clean forward), so at most
about k + 1 times the time and the memory of ``steps=1`` (less where a batch row is cheaper
than a lone one, as on a CPU at short prompts). Pearson with the exact sweep on the tests' tiny models (IOI pair,
all cells, zeros included), steps 1 → 4: Pythia resid_pre 0.00 → 0.995, attn_out 0.37 →
0.997, resid_post 0.22 → 0.997; GPT-2 resid_pre 0.98 → 1.000; Mamba resid_pre 0.983 → 0.985,
h 0.998 → 0.995; Mamba-2 resid_pre 0.92 → 1.000; Falcon-H1 resid_pre 0.89 → 1.000. At the
real shapes (random weights, IOI pair, the cells from the swapped name on): mamba-130m
resid_pre 0.72 → 0.92, resid_post 0.82 → 0.92, pythia-160m resid_pre 0.92 → 1.00, gpt2
resid_pre 0.96 → 1.00. The path is the answer for the residual points; on a point that is
not a cut of the model (Mamba's h, whose block also reads the residual through the gate and
the skip D·x) it moves those other inputs too, so the estimate is that of a patch in a partly
clean context: mamba-130m h 1.000 → 0.907.

Components: `Family.attribution` by default (the residual points, plus Mamba's `h` or the
attention output); any component `patch_sweep` accepts except thirds of a fused projection
(GPT-2's q, k, v: the hook sees a view the model never reads; its gradient does not exist).

Time and memory (checked before the forward, refused with the estimate). With steps=1: one
forward of the clean prompt without autograd, recording the points (Mamba's h where it is read
out, `Point.read_at`) and stopping before the LM head; then the corrupt run under autograd and
its backward. Where the metric reads one or two logits ("logit", "logit_diff" with `wrong`),
only those rows of the unembedding are computed (`Family.head(columns=)`): at a short prompt the
LM head is the largest matmul of a forward, and of its backward.

Where the whole forward's autograd graph fits GRAPH_BUDGET (1 GiB; at the default components
up to 94 tokens of mamba-130m, 587 of pythia-160m), the corrupt forward runs under autograd from
the lowest swept layer (its input from `record_pass(stop=...)`) and one backward follows:
`Family.grad_bytes`(T) per block (on Mamba Ā, B̄ and h: the scan is materialised under
autograd), the clean − corrupt difference of every point at every swept layer, Σ_points L · T
· features floats, and gradients reduced to [T] as the backward reaches them, never held. At
mamba-130m's IOI pair (T = 14) that is ~150 MB, and the work is about three forwards (clean,
corrupt, backward) against four block by block.

Above the budget the backward runs one block at a time (`_layer_by_layer`): a forward without
autograd records each block's input, then each block is rerun under autograd from the top
down, so it holds one block's autograd graph, every block's input, L · T · d floats, and the
differences. The rerun costs one more forward. At mamba-130m's shapes with the default
components (resid_pre, h, resid_post) that is ~2.9 MB per token (0.37 graph, 0.07 inputs, 2.5
differences, 2.4 of them h's): ~3 GiB at T = 1024 (11 GiB with the whole forward's graph).
The two give the same estimates to fp32 rounding (`tests/unit/test_attribution.py`).
``steps=k`` multiplies graphs, inputs and values by k + 1.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from ..base import memory
from ..base.hooks import temporary_hooks
from ..engine.convention import analysis
from ..engine.record import record_pass
from ..engine.restart import blocks_from
from ..handle.inputs import layer_list
from .patching import COLUMNS as PATCH_COLUMNS
from .patching import Patching, components as patch_components, head_columns, metric_tensor, prepare, recovery
from .signatures import ATTRIBUTION_PATCH

COLUMNS = PATCH_COLUMNS + ("estimate",)
FP32_BYTES = 4
# the whole forward's autograd graph is kept up to this estimate (sparing the blockwise path's rerun,
# a forward); above it, one block's at a time (module docstring, "Time and memory"). A constant, not a
# share of the free memory, so that a long prompt's peak stays the blockwise one on any machine.
GRAPH_BUDGET = 2**30


@analysis
def attribution_patch(clean, corrupt, *, model, answer, wrong=None, components=None, layers=None, positions=None,
                      metric: str = "logit_diff", steps: int = 1) -> pd.DataFrame:
    """Estimated patching effects of every component, layer and patch (module docstring).

    Arguments as `patching.patch_sweep`'s, with `components` a list (default: each model's
    `Family.attribution`). Returns one row per (model, component, layer, patch), columns
    `COLUMNS`; ``attrs`` as patch_sweep's, with m_clean and m_corrupt from the forwards,
    ``method`` "attribution" and ``steps``. steps: 1 (default) the gradient at the corrupt run
    alone (AtP); k ≥ 2 the gradient along the path from the corrupt to the clean input in k
    segments (module docstring, "Along a path"), at k + 1 times the cost in time and memory.
    dtype, device, progress, stop: the calling convention (`engine.convention`).
    """
    steps = ATTRIBUTION_PATCH["steps"].validate(steps)  # its signature
    frames, attrs = [], {"metric": metric, "method": "attribution", "steps": steps, "m_clean": {}, "m_corrupt": {},
                         "components": {}}
    for handle in [model]:  # one loaded handle; a list runs model by model (`engine.convention`)
        names = _components(handle, components)
        sweep = prepare(clean, corrupt, model=handle, answer=answer, wrong=wrong, component=names[0],
                        layers=layers if len(_points(handle, names)) == 1 else None, positions=positions,
                        metric=metric)[0]
        sweep = replace(sweep, layers=_layers(handle, names, layers, sweep.layers))
        frames.append(_estimate(sweep, names, attrs, steps))
        attrs["components"][handle.name] = names
    df = pd.concat(frames, ignore_index=True)[list(COLUMNS)]
    df.attrs.update(attrs)
    return df


def _components(handle, components) -> tuple[str, ...]:
    """The components to estimate for this model, checked; ValueError names the argument."""
    arch = handle.arch
    names = arch.attribution if components is None else ([components] if isinstance(components, str) else components)
    try:
        names = tuple(dict.fromkeys(names))
    except TypeError:
        raise ValueError(f"components must be a list of component names, got {components!r}") from None
    valid = [c for c in patch_components(handle) if arch.find(c.split(".")[0]).part is None]
    bad = [c for c in names if c not in valid]
    if not names or bad:
        shown = [c for c in valid if not c.startswith("z.")] + (["z.<head>"] if any(c.startswith("z.") for c in valid)
                                                                else [])
        why = f" ({bad[0]!r} cannot be estimated)" if bad else ""
        raise ValueError(f"{handle.name}: components must be a non-empty list of {', '.join(shown)}; got "
                         f"{list(names) if names else components!r}{why}")
    return names


def _points(handle, names) -> tuple[str, ...]:
    """The registry points the components read (z.<head> reads z)."""
    return tuple(dict.fromkeys(n.split(".")[0] for n in names))


def _layers(handle, names, layers, checked) -> tuple[int, ...]:
    """The layers to sweep: `checked` (by `prepare`, against the one point) for one point; for
    several (a hybrid's resid_post and h, or attn_out and h), those of `layers` (default all) that
    have any of them, each point then estimated at the layers that have it (`_sites`). A listed
    layer with none of them, or a point at none of the layers, is refused naming the argument."""
    points = _points(handle, names)
    if len(points) == 1:
        return checked
    having = {p: handle.arch.layers_with(handle.module, p) for p in points}
    chosen = layer_list(handle, layers)
    if layers is None:
        chosen = tuple(l for l in chosen if any(l in h for h in having.values()))
    for l in chosen:
        if not any(l in h for h in having.values()):
            raise ValueError(f"layers: layer {l} of {handle.name} is an {handle.layer_kind(l)} layer and has none of "
                             f"the components {list(points)}; the layers that have one: "
                             f"{sorted(set().union(*having.values()))}")
    for p, h in having.items():
        if not set(h) & set(chosen):
            raise ValueError(f"components: {p!r} is at none of layers {list(chosen)} of {handle.name}; it is at "
                             f"layers {list(h)}")
    return chosen


def _sites(handle, points, layers) -> list[tuple[str, int]]:
    """(point, layer) of each point at each of `layers` that has it (a hybrid's h: its SSM layers)."""
    having = {p: set(handle.arch.layers_with(handle.module, p)) for p in points}
    return [(p, l) for p in points for l in layers if l in having[p]]


def _read_at(handle, points) -> dict[str, str]:
    """Where each point's value is read: its `Point.read_at`, unless that is itself one of the
    points (one hook a value)."""
    read = {p: handle.arch.point(p).read_at for p in points}
    return {p: read[p] if read[p] and read[p] not in points else p for p in points}


def _estimate(sweep: Patching, names, attrs, steps: int) -> pd.DataFrame:
    handle, points = sweep.handle, _points(sweep.handle, names)
    sites = _sites(handle, points, sweep.layers)
    having = set(sites)
    whole = _whole_graph_fits(sweep, points, steps)
    if steps == 1:
        diff, m_clean = _record_clean(sweep, sites)
        per_position, m = _layer_by_layer(sweep, names, sites, sweep.corrupt, diff=diff, whole=whole)
        m_corrupt = float(m[0])
    else:
        alpha = torch.linspace(0, 1, steps + 1)
        ids = torch.cat([sweep.corrupt.expand(steps, -1), sweep.clean])
        per_position, m = _layer_by_layer(sweep, names, sites, ids, alpha=alpha, whole=whole)
        m_corrupt, m_clean = float(m[0]), float(m[-1])
    attrs["m_clean"][handle.name], attrs["m_corrupt"][handle.name] = m_clean, m_corrupt
    rows = []
    for name in names:
        for layer in sweep.layers:
            if (name.split(".")[0], layer) not in having:
                continue  # a layer without this component (a hybrid's attention layer has no h)
            effect = per_position.get((name, layer))  # None: the metric does not depend on it
            effect = None if effect is None else effect.numpy()  # numpy: a row costs µs, not a torch call's tens
            for patch, label in zip(sweep.patches, sweep.labels):
                estimate = float(effect[list(patch)].sum()) if patch and effect is not None else 0.0
                rows.append((handle.name, layer, handle.layer_kind(layer), label, name, m_corrupt + estimate, estimate))
    df = pd.DataFrame(rows, columns=["model", "layer", "kind", "position", "component", "metric_patched", "estimate"])
    df["recovery"] = recovery(df["estimate"].to_numpy() + m_corrupt, m_clean, m_corrupt)
    return df


def _feature_slice(handle, name: str) -> slice:
    """The features a component covers: all, or one head's slice of z (z.<head>)."""
    point, _, head = name.partition(".")
    if not head:
        return slice(None)
    width = handle.arch.feature_shape(handle.module.config, point)[0]
    size = width // handle.arch.dims(handle.module.config)["heads"]
    return slice(int(head) * size, (int(head) + 1) * size)


def _record_clean(sweep: Patching, sites):
    """The clean run's value of every point at every swept layer that has it, `sites` ({(point,
    layer): [T, *features]} in fp32), and m_clean, from one forward (`record_pass`) that stops
    before the LM head."""
    handle, read = sweep.handle, _read_at(sweep.handle, dict.fromkeys(p for p, _ in sites))
    clean = record_pass(handle, sweep.clean, [(read[p], l) for p, l in sites],
                        keep=lambda name, layer, value: value[0].detach().float().clone(), stop=handle.n_layers)
    with torch.no_grad():
        m_clean = float(_metric(sweep, clean.entries[handle.n_layers][0][0][:, -1])[0])
    return {(p, l): clean.points[read[p], l] for p, l in sites}, m_clean


def _metric(sweep: Patching, final: torch.Tensor) -> torch.Tensor:
    """The metric of each row's last final residual, final [b, d] → [b], differentiable
    (`patching.metric_tensor`), from the logits it reads (`patching.head_columns`: one or two rows
    of the unembedding for "logit" and "logit_diff" with a `wrong` token, else all)."""
    handle = sweep.handle
    columns, answer, wrong = head_columns(sweep)
    logits = handle.arch.head(handle.module, final, columns)[:, :handle.vocab_size if columns is None else None]
    return metric_tensor(logits, sweep.metric, answer, wrong)


def _layer_by_layer(sweep: Patching, names, sites, ids: torch.Tensor, *, diff=None, alpha=None, whole: bool = False):
    """Per (component, layer) the estimate of patching each position alone, [T] float64, and the
    metric of every batch row [b] (float64), from a forward and a backward, at `sites` (the
    (point, layer) pairs estimated, `_sites`).

    ids [b, T]: the corrupt run (b = 1, with `diff` the clean values of every point, which the
    forward turns into clean − corrupt in place), or the rows of the path (with `alpha` [b], the
    embedding of row j moved to corrupt + alpha_j · (clean − corrupt), the last row the clean
    run; the forward keeps each point's value on every row).

    whole: one forward under autograd from the lowest swept layer up, each point recorded and a
    tensor hook on it (or on its `grad_at` point) that reduces the gradient as the backward
    reaches it; the graph of every block lives until the backward (module docstring, "Time and
    memory").
    Else block by block: a forward without autograd records the points and what enters each
    block (`record_pass`); then from the last block down to the lowest swept layer each block is
    rerun under autograd from its recorded input, hooked as above, and the gradient of its input
    is carried to the block below, so one block's graph lives at a time. Either way no gradient
    outlives its reduction and nothing accumulates on the model's parameters (the gradients are
    taken with respect to the recorded inputs only).
    """
    handle, arch = sweep.handle, sweep.handle.arch
    read = _read_at(handle, _points(handle, names))
    source = {where: p for p, where in read.items()}
    per_position = {}

    def record(where, layer, value):  # into diff in place, or the value itself
        if diff is not None:
            diff[source[where], layer].sub_(value[0].detach().float())
            return None
        return value.detach().float().clone()

    def interpolate(value):
        corrupt, clean = value[0].clone(), value[-1].clone()
        value.copy_(corrupt + alpha.to(value)[:, None, None] * (clean - corrupt))

    def reduce(key, grad):
        if diff is not None:  # the gradient at the corrupt run against clean − corrupt
            g, step = grad.float(), diff.pop(key)[None]
        else:  # the trapezoid rule along the path's segments
            a = values.pop(key)
            g, step = (grad[1:].float() + grad[:-1].float()) / 2, a[1:] - a[:-1]
        for name in names:
            if name.split(".")[0] == key[0]:
                features = _feature_slice(handle, name)
                per_position[name, key[1]] = (g[..., features] * step[..., features]).flatten(2).sum((0, 2)).double()

    def watch(key, value):
        value.register_hook(lambda grad: reduce(key, grad))

    def keep(key, value):
        values[key] = record(read[key[0]], key[1], value)

    last, lowest = handle.n_layers - 1, min(sweep.layers)
    # (first, stop) blocks of each autograd graph, from the top down
    spans = [(lowest, last + 1)] if whole else [(layer, layer + 1) for layer in range(last, lowest - 1, -1)]
    with handle.lock:
        forward = record_pass(handle, ids, [] if whole else [(read[p], l) for p, l in sites], keep=record,
                              entries=[first for first, _ in spans],
                              edits=[] if alpha is None else [("embed", None, interpolate)],
                              stop=lowest if whole else handle.n_layers)
        values, entries = {(source[where], l): v for (where, l), v in forward.points.items()}, dict(forward.entries)
        grad = None
        for first, stop in spans:
            entry = entries.pop(first)
            resid = entry[0][0].detach().requires_grad_(True)
            with torch.enable_grad(), temporary_hooks() as hooks:
                for p, layer in sites:
                    if first <= layer < stop:
                        if whole:
                            hooks.add(arch.hook(handle.module, read[p], layer, lambda v, key=(p, layer): keep(key, v)))
                        hooks.add(arch.hook(handle.module, arch.point(p).grad_at or p, layer,
                                            lambda v, key=(p, layer): watch(key, v)))
                out = blocks_from(handle, first, resid, entry, stop=stop)
                if stop == last + 1:
                    m = _metric(sweep, out[:, -1])
                    grad, = torch.autograd.grad(m.sum(), resid)
                else:
                    grad, = torch.autograd.grad(out, resid, grad)
    return per_position, m.detach().double()


def _whole_graph_fits(sweep: Patching, points, steps: int = 1) -> bool:
    """Whether the whole forward's autograd graph is kept (its estimate within GRAPH_BUDGET and
    the memory available), else one block's at a time; either way the work is refused, with its
    estimate, where it does not fit (module docstring, "Time and memory")."""
    handle, arch, config = sweep.handle, sweep.handle.arch, sweep.handle.module.config
    depth = handle.n_layers - min(sweep.layers)  # the blocks under autograd
    features = len(sweep.layers) * sum(int(np.prod(arch.feature_shape(config, p))) for p in points)

    def need(rows, blocks, inputs):  # graphs of `blocks` blocks, `inputs` blocks' inputs and the points' values
        return rows * (blocks * arch.grad_bytes(config, sweep.T) + FP32_BYTES * sweep.T * (
            inputs * arch.dims(config)["d"] + features))

    rows = 1 if steps == 1 else steps + 1
    whole = need(rows, depth, 1)
    if whole <= GRAPH_BUDGET and memory.fits(whole):
        return True
    memory.check_fits(need(rows, 1, depth),
                      f"attribution patching of {len(points)} components × {len(sweep.layers)} layers × {sweep.T} "
                      f"tokens of {handle.name}{f' along {steps} steps' if steps > 1 else ''} (one block's autograd "
                      "graph, every block's input and the clean − corrupt differences)",
                      "pass fewer components or layers, fewer steps, or shorten the prompts")
    return False
