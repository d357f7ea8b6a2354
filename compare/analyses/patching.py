"""Activation patching: which internal state carries the prediction that tells a clean prompt from a corrupt one.

The experiment (denoising, as TransformerLens' `patching`): run the corrupt prompt, replace one
component at one layer and some positions by its value in the clean run, and read a metric of
the answer at the last position. Per model, with m_clean and m_corrupt the metric of the two
unpatched runs,

    recovery = (m_patched − m_corrupt) / (m_clean − m_corrupt)

so 0 is the corrupt run and 1 the clean one (NaN when the two runs agree, m_clean = m_corrupt).

Metrics of the last position's logits, with a the answer and w the wrong answer:
    logit_diff   logit[a] − logit[w]; without `wrong`, logit[a] − the best other logit
    logit        logit[a]
    prob         softmax(logits)[a]
    logprob      log_softmax(logits)[a]

Components: the family's patchable points (`Family.patchable`: every per-layer point whose
second axis is positions, so not `pattern`), and on transformers "z.<head>", one head's slice of
`z` (the heads' outputs before the output projection) for per-head patching. On Mamba, `h`
follows the edit semantics of its hook point (`compare.ssm.mamba`): the patched state at position
p enters the recurrence, h'_t = Ā_t h'_{t-1} + w_t, so it reaches every later position;
`h_readout` changes the read-out y at p only.

Positions: None patches every position alone; a list patches each item alone, an item being a
position or a tuple of positions patched together (the empty tuple patches nothing: the
corrupt run itself); "all" patches every position at once (also as an item of the list). The frame's `position` is the int
for single positions and a label otherwise ("all", "none", "2,5"), which makes the column
object-typed.

Engine (`patch_sweep`): one forward of the clean prompt records the component at every swept
layer; one forward of the corrupt prompt caches what enters every block (`engine.record`).
For each layer l the patches run as one batch per chunk, restarted at block l from the corrupt
cache (layers below l are never recomputed) with a torch hook that writes the clean values at
each row's positions (`torch.where`, an exact copy); blocks after the patched one compute the
last position only where they can (`restart.blocks_from`'s last_only) and the LM head runs at
the last position only, on every run at once, and on the logits the metric reads only (answer and
wrong for logit_diff against a wrong answer, the answer for logit; all for the others). m_clean and m_corrupt come from the same LM-head
call as the patched runs, from each run's final residual, so a patch that restores the final
residual exactly (resid_post at the last layer, every position) recovers exactly 1; a patch of
no position is the corrupt run itself and recovers exactly 0.

On Mamba's `h`, where the state at p is the whole past, the engine does not rerun the patched
block at all, and reuses what the causal model leaves unchanged (`_h_wavefront`): positions
before p are the corrupt run's in every layer, and from p on only the difference
e_p = h_clean,p − h_corrupt,p travels, e_t = Ā_t e_{t-1}, adding C_t · e_t to y; the patched
block's output is then the corrupt one plus the family's response to that change of y
(`Family.y_response`). The blocks above run on positions p.. only (the block given the corrupt
run's incoming state at p, `ssm.mamba.MambaState`), every row
patched at p below them in one batch (the rows of all swept layers, joining as the blocks rise).
This is the same arithmetic as the hook point's increment (`MambaMixer`), so it agrees with the
reference to fp32 rounding. For a patch of several positions the increments of each add up
(the hook point's semantics: e is taken against the corrupt state), so only a single position
is a plain replacement of the state.

On Mamba-2's `h` (`Point.into_y`: also h_readout, write and B, and the same points of a hybrid's
Mamba-2 layers) the patched block runs once per layer, unpatched: each patch is the increment
clean − corrupt at its positions, whose change of y the family computes (`Family.noise_into_y`),
and the block is finished from y (`restart.finals_from_y`); the blocks above run at every
position, all of a layer's patches in one batch. On a hybrid the rows finished from y join the
suffix wavefront below (`_entering`).

On a family whose blocks run on a suffix of positions (`Family.suffix`: the hybrids), a residual
point (resid_pre, resid_post) takes `_suffix_wavefront`: a patch whose first position is p
changes nothing before p in any layer, so every block above it runs on positions p.. only, its
mixers reading what the corrupt run leaves before p (attention's keys and values, the SSM's state
and conv inputs: `Family.record_prefix`, recorded once per block), with every row patched below
a block in one call whatever its p: the rows of all starts are packed along positions
(`Family.block_suffix`), so the block's norms, projections and MLP run on all of them as one GEMM
each and only its mixers go start by start. Same arithmetic as the full forward but for the
order of sums (the state before p is carried by the recurrence, the scan chunks start at p), so
it agrees with the reference to fp32 rounding.

`patching_ref.patch_sweep_ref` is the one-trace-per-patch twin: the test oracle and the
baseline of `benchmarks/bench_patching.py`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..base import memory
from ..base.checks import check_callbacks
from ..base.hooks import temporary_hooks
from ..handle.inputs import byte_budget, handles_of, is_int, layer_list, prompt_ids, token_id
from ..engine.convention import analysis, component_of
from ..handle.model import Model, NonFiniteError
from ..ssm.mamba import PREFIX_POINTS, Prefix
from ..engine.record import record_pass
from ..engine.restart import (DEFAULT_MAX_BYTES, blocks_from, chunk_size, copies, edited_finals, finals_from_y, head,
                              y_terms)
from ..ssm.scan import discretise, linear_scan

from .signatures import METRICS, PATCH_SWEEP  # the allowed values are declared with the analyses' signatures
COLUMNS = ("model", "layer", "kind", "position", "component", "metric_patched", "recovery")
FP32_BYTES = 4


@dataclass(frozen=True)
class Patching:
    """A validated patch sweep of one model: everything the engine and the reference need."""
    handle: Model
    clean: torch.Tensor  # [1, T]
    corrupt: torch.Tensor  # [1, T]
    answer: int
    wrong: int | None
    component: str  # as asked: a point, or "z.<head>"
    point: str  # the registry point patched
    head: int | None  # z.<head>: that head's slice of the features
    layers: tuple[int, ...]
    patches: tuple[tuple[int, ...], ...]  # positions written together, one run each
    labels: tuple  # the frame's `position` of each patch
    metric: str

    @property
    def T(self) -> int:
        return self.clean.shape[1]

    def feature_slice(self) -> slice:
        """The features a patch writes: all, or one head's."""
        if self.head is None:
            return slice(None)
        width = self.handle.arch.feature_shape(self.handle.module.config, self.point)[0]
        size = width // self.handle.arch.dims(self.handle.module.config)["heads"]
        return slice(self.head * size, (self.head + 1) * size)


def prepare(clean, corrupt, *, model, answer, wrong=None, component=None, layers=None, positions=None,
            metric="logit_diff") -> list[Patching]:
    """Check every argument for every model before any compute; ValueError names the argument."""
    PATCH_SWEEP["metric"].validate(metric)  # its signature
    out = []
    for handle in handles_of(model):
        clean_ids = prompt_ids(handle, clean, "clean")
        corrupt_ids = prompt_ids(handle, corrupt, "corrupt")
        if clean_ids.shape[1] != corrupt_ids.shape[1]:
            raise ValueError(
                f"{handle.name}: clean and corrupt must have the same number of tokens to patch position by "
                f"position; clean is {clean_ids.shape[1]} tokens {handle.decode_tokens(clean_ids[0].tolist())}, "
                f"corrupt is {corrupt_ids.shape[1]} {handle.decode_tokens(corrupt_ids[0].tolist())}")
        if torch.equal(clean_ids, corrupt_ids):
            warnings.warn(f"{handle.name}: clean and corrupt are the same {clean_ids.shape[1]} tokens, so "
                          "m_clean = m_corrupt and recovery = (m_patched − m_corrupt) / (m_clean − m_corrupt) is "
                          "undefined (NaN in every row); give a corrupt prompt that changes the answer",
                          RuntimeWarning, stacklevel=3)
        name = component_of(handle, component)
        point, head = _component(handle, name)
        a = token_id(handle, answer, "answer")
        w = None if wrong is None else token_id(handle, wrong, "wrong")
        if w == a:
            raise ValueError(f"wrong must differ from answer; both are token {a} ({handle.decode_tokens([a])[0]!r}) "
                             f"in {handle.name}")
        patches, labels = _patches(positions, clean_ids.shape[1])
        out.append(Patching(handle, clean_ids, corrupt_ids, a, w, name, point, head,
                            layer_list(handle, layers, point=point), patches, labels, metric))
    return out


@analysis(native=True)
def patch_sweep(clean, corrupt, *, model, answer, wrong=None, component=None, layers=None, positions=None,
                metric="logit_diff", max_bytes: int = DEFAULT_MAX_BYTES, progress=None, stop=None) -> pd.DataFrame:
    """Layers × positions of `component` patched from the clean run into the corrupt one (module docstring).

    clean, corrupt: text or token IDs [T], the same length in each model's tokens.
    model: a `Model`, a source for `load_model`, or a list of them (rows for each, side by side);
    dtype, device: the calling convention (`engine.convention`). component: default the
    family's (`Family.default_component`). answer, wrong: one-token strings (" Mary") or token IDs. layers: default all.
    Returns one row per (model, layer, patch), columns `COLUMNS`; ``attrs`` hold per model the
    unpatched metrics (m_clean, m_corrupt), the answer and wrong IDs and the tokens.
    max_bytes: memory budget of one batched chunk. progress(done, total) counts runs (layer ×
    patch) as they finish: per layer, per patched position (all layers at once) on Mamba's `h`, and
    on a hybrid per pack of patched positions whose rows fit max_bytes (all layers at once; one pack
    for a short prompt). stop (``is_set()``), checked before each of these steps: the frame then
    holds the runs finished and ``attrs["stopped"]`` is True.
    """
    sweeps = prepare(clean, corrupt, model=model, answer=answer, wrong=wrong, component=component,
                     layers=layers, positions=positions, metric=metric)
    max_bytes = byte_budget(max_bytes)
    check_callbacks(progress, stop)
    count = Counter(sum(len(s.layers) * len(s.patches) for s in sweeps), progress)
    frames, attrs, stopped = [], _attrs(sweeps), False
    for sweep in sweeps:
        src, entries, finals, same = record(sweep)
        if _h_path(sweep):
            done, stopped = _h_wavefront(sweep, src, entries, finals["corrupt"], max_bytes, count, stop)
        elif _suffix_start(sweep) is not None:
            done, stopped = _suffix_wavefront(sweep, src, entries, finals["corrupt"], same, max_bytes, count, stop)
        else:
            done, stopped = _by_layer(sweep, src, entries, finals["corrupt"], max_bytes, count, stop)
        frames.append(_rows(sweep, done, finals, attrs))
        if stopped:
            break
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    df.attrs.update(attrs, stopped=stopped)
    return df


@dataclass
class Counter:
    """progress(done, total) in runs (layer × patch), across the models of a call."""
    total: int
    progress: object
    done: int = 0

    def add(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.done, self.total)


# --- the engine -------------------------------------------------------------------------------

@torch.no_grad()
def record(sweep: Patching):
    """What the engine reads from the two unpatched runs, each one forward of the recorder (`engine.record`):

    src: the clean run's component at every swept layer ({layer: [1, T, *feature]});
    entries: what enters every block of the corrupt run ({layer: (args, kwargs)});
    finals: both runs' final residuals at the last position ({"clean", "corrupt"}: [1, d]);
    terms: for Mamba's `h` only, per swept layer the corrupt run's Δ, C, gate and y, and the
        difference clean h − corrupt h (which then replaces src), and per layer the corrupt run's
        `ssm.mamba.PREFIX_POINTS` for the blocks above a patch;
    same: elsewhere, per swept layer the positions where the clean run's component (the patched
        features) equals the corrupt run's exactly ({layer: [T] bool}): a patch of only these
        positions writes what is there, so it is the corrupt run (the positions before the first
        token in which the prompts differ, in a causal model).
    """
    handle = sweep.handle
    _check_cache_fits(sweep)
    last = handle.n_layers - 1
    features, same = sweep.feature_slice(), {}
    with handle.lock:  # both passes (`engine.record`) in one hold of the model
        clean = record_pass(handle, sweep.clean, dict.fromkeys([(sweep.point, l) for l in sweep.layers]
                                                               + [("resid_post", last)]))
        src = {l: clean.points[sweep.point, l] for l in sweep.layers}
        points = [("resid_post", last)]
        if _h_path(sweep):  # the prefixes of every block a patch may run above, the terms of each swept layer
            points += [(name, l) for l in range(handle.n_layers) for name in PREFIX_POINTS]
            points += [(name, l) for l in sweep.layers for name in ("delta", "C", "gate", "y", "h")]
        else:  # where the corrupt run already holds the clean values
            points += [(sweep.point, l) for l in sweep.layers]

        def keep(name, layer, value):  # h kept as clean − corrupt, each clean copy freed as it is used
            if name == "h" and _h_path(sweep):
                return src.pop(layer) - value
            if name == sweep.point and layer in src and not _h_path(sweep):
                same[layer] = (src[layer][..., features] == value[..., features]).flatten(2).all(-1)[0]
                if (name, layer) != ("resid_post", last):
                    return None
            return value.detach().clone()

        # the corrupt run's entries for every layer: the h restart needs the next block's too
        corrupt = record_pass(handle, sweep.corrupt, dict.fromkeys(points), entries=range(handle.n_layers), keep=keep)
    finals = {"clean": clean.points["resid_post", last][:, -1], "corrupt": corrupt.points["resid_post", last][:, -1]}
    if not _h_path(sweep):
        return src, corrupt.entries, finals, same
    terms = {l: {"diff" if name == "h" else name: value for name, value in corrupt.at(l).items()}
             for l in range(handle.n_layers)}
    return terms, corrupt.entries, finals, same


def _h_path(sweep: Patching) -> bool:
    """Mamba's state: patched by `_h_wavefront` instead of rerunning the patched block, where
    the family's block allows it (`Family.h_wavefront`); elsewhere h is patched by its hook,
    whose edit the recurrence carries forward."""
    return sweep.point == "h" and sweep.handle.arch.h_wavefront


def _by_layer(sweep: Patching, src, entries, corrupt_final: torch.Tensor, max_bytes: int, count: Counter, stop):
    """Every component but Mamba's `h`: layer by layer, each layer's patches batched
    (`_hooked_restart`). Returns ({(layer, patch index): final residual [d]}, stopped)."""
    done = {}
    for layer in sweep.layers:
        if stop is not None and stop.is_set():
            return done, True
        run = [i for i, patch in enumerate(sweep.patches) if patch]  # a patch of nothing is the corrupt run
        with sweep.handle.lock, torch.inference_mode():  # per layer, so other callers get the model in between
            restart = _into_y_restart if _into_y(sweep) else _hooked_restart
            finals = (restart(sweep, layer, src[layer], entries[layer], [sweep.patches[i] for i in run],
                              max_bytes) if run else [])
        done.update({(layer, i): corrupt_final[0] for i, patch in enumerate(sweep.patches) if not patch})
        done.update({(layer, i): final for i, final in zip(run, finals)})
        count.add(len(sweep.patches))
    return done, False


def _mask(sweep: Patching, patches, value: torch.Tensor) -> torch.Tensor:
    """Where each row's patch writes: [b, T, 1, ...] (or [b, T, features] for one head)."""
    b, T = len(patches), value.shape[1]
    rows = torch.zeros(b, T, dtype=torch.bool, device=value.device)
    for i, positions in enumerate(patches):
        rows[i, list(positions)] = True
    mask = rows.view(b, T, *[1] * (value.dim() - 2))
    if sweep.head is not None:
        feature = torch.zeros(value.shape[-1], dtype=torch.bool, device=value.device)
        feature[sweep.feature_slice()] = True
        mask = mask & feature
    return mask


def _hooked_restart(sweep: Patching, layer: int, src: torch.Tensor, entry, patches, max_bytes: int) -> torch.Tensor:
    """Any component: blocks layer.. rerun on copies of the corrupt entry, a hook writing the
    clean values at each row's positions (`restart.edited_finals`)."""
    def edit(rows):
        def write(value):
            chunk = [patches[i] for i in rows]
            value.copy_(torch.where(_mask(sweep, chunk, value), src.to(value.device, value.dtype), value))
        return write

    return edited_finals(sweep.handle, sweep.point, layer, entry, len(patches), edit, max_bytes)


def _into_y(sweep: Patching) -> bool:
    """A patch whose change of the SSM's y is linear in it (`Point.into_y`: Mamba-2's h), of the whole point."""
    return sweep.handle.arch.point(sweep.point).into_y and sweep.head is None


def _into_y_restart(sweep: Patching, layer: int, src: torch.Tensor, entry, patches, max_bytes: int) -> torch.Tensor:
    """A patch of an `into_y` point: the hook point's edit is the increment clean − corrupt at the
    patch's positions, whose change of y the family computes (`Family.noise_into_y`); the block
    is finished from y and the blocks above run batched (`restart.finals_from_y`)."""
    terms = _y_terms(sweep, layer, src, entry)
    return finals_from_y(sweep.handle, sweep.point, layer, entry, terms, len(patches),
                         lambda rows: _patch_dy(sweep, layer, terms, [patches[i] for i in rows]), max_bytes)


def _y_terms(sweep: Patching, layer: int, src: torch.Tensor, entry) -> dict:
    """The corrupt block's `restart.y_terms` at `layer`, and "diff": the clean − corrupt value of the
    patched point [1, T, ...], the increment a patch writes at its positions."""
    terms = y_terms(sweep.handle, sweep.point, layer, entry)
    corrupt = terms[sweep.point]
    return {**terms, "diff": src.to(corrupt.device, corrupt.dtype) - corrupt}


def _patch_dy(sweep: Patching, layer: int, terms: dict, patches) -> torch.Tensor:
    """Δy [len(patches), T, ...] of each patch of an `into_y` point (`Family.noise_into_y` of its increment)."""
    handle = sweep.handle
    return torch.cat([handle.arch.noise_into_y(handle.module, layer, sweep.point, terms, list(patch),
                                               terms["diff"][:, list(patch)]) for patch in patches])


def _h_wavefront(sweep: Patching, terms: dict, entries, corrupt_final: torch.Tensor, max_bytes: int,
                 count: Counter, stop):
    """Mamba's `h` (module docstring), every swept layer at once, patches grouped by their first
    position p. A patch at layer l changes block l's output by the family's response
    (`Family.y_response`) to y's change C_t · E_t, E_t = Ā_t E_{t-1} + e_t, e the clean − corrupt
    state at the patch's positions; the patched block is never rerun. Blocks above run on
    positions p.. only (the block with the corrupt run's state at p, `ssm.mamba.Prefix`), on every
    row patched below them at once: block k takes the rows of layers < k, then the rows of layer
    k join. Returns ({(layer, patch index): final residual [d]}, stopped)."""
    handle, arch = sweep.handle, sweep.handle.arch
    blocks, L = arch.blocks(handle.module), handle.n_layers
    prefixes = {k: Prefix(blocks[k], terms[k]) for k in range(min(sweep.layers) + 1, L)}
    done = {(layer, i): corrupt_final[0] for layer in sweep.layers for i, patch in enumerate(sweep.patches)
            if not patch}
    for p, group in _by_start(sweep):
        if stop is not None and stop.is_set():
            return done, True
        with handle.lock, torch.inference_mode():
            rows, keys = None, []  # the residuals at positions p.. [R, T - p, d] of the rows running
            for k in range(min(sweep.layers), L):
                if rows is not None:
                    rows = _blocks_suffix(handle, blocks[k], rows, prefixes[k], p, k == L - 1, max_bytes)
                if k in sweep.layers:
                    joined = _patched_block(sweep, k, terms[k], entries, corrupt_final, [sweep.patches[i] for i in group], p)
                    rows = joined if rows is None else torch.cat([rows, joined])
                    keys += [(k, i) for i in group]
        done.update({key: final for key, final in zip(keys, rows[:, -1])})
        count.add(len(sweep.layers) * len(group))
    return done, False


def _patched_block(sweep: Patching, layer: int, terms: dict, entries, corrupt_final, patches, p: int) -> torch.Tensor:
    """Block `layer`'s output at positions p.. [len(patches), T - p, d] with each patch of `h`
    (only the last position, [len(patches), 1, d], at the last layer: nothing reads more)."""
    handle, arch = sweep.handle, sweep.handle.arch
    C, gate, diff = terms["C"].float(), terms["gate"], terms["diff"]
    if "A_bar" not in terms:  # once per layer, for every group of patches
        A, _ = arch.ssm_parameters(handle.module, layer)
        delta = terms["delta"].float()
        terms["A_bar"] = discretise(delta, A.to(delta.device), C)[0]  # Ā as the model's scan computed it
    A_bar = terms["A_bar"]
    e = diff.new_zeros(len(patches), *diff.shape[1:])
    for i, positions in enumerate(patches):
        e[i, list(positions)] = diff[0, list(positions)]
    dy = (linear_scan(A_bar, e) @ C[..., None]).squeeze(-1)  # [b, T, d_in]; Ā [1, T, ...] broadcasts
    if layer == handle.n_layers - 1:
        return corrupt_final[:, None] + arch.y_response(handle.module, layer, dy[:, -1:], gate[:, -1:])
    out = entries[layer + 1][0][0]  # the block's corrupt output, what enters the next block
    return out[:, p:] + arch.y_response(handle.module, layer, dy[:, p:], gate[:, p:])


def _blocks_suffix(handle, block, rows: torch.Tensor, prefix, p: int, last_only: bool, max_bytes: int):
    """The block on positions p.. of the rows, from the prefix's state at p, in chunks that fit `max_bytes`."""
    size, state = chunk_size(handle, None, rows.shape[1], max_bytes), prefix.state(p)
    return torch.cat([block(rows[i:i + size], last_only, state) for i in range(0, len(rows), size)])


def _by_start(sweep: Patching) -> list[tuple[int, list[int]]]:
    """The non-empty patches grouped by their first position p, rising: [(p, [patch index, ...])]
    (a wavefront runs each group's rows on positions p.. only)."""
    starts = sorted({min(patch) for patch in sweep.patches if patch})
    return [(p, [i for i, patch in enumerate(sweep.patches) if patch and min(patch) == p]) for p in starts]


def _suffix_start(sweep: Patching) -> int | None:
    """On a family with `Family.suffix`, where the rows of a patch of layer l start running
    suffixes: block l for a block's input (resid_pre), l + 1 for anything else; None elsewhere."""
    arch = sweep.handle.arch
    if not arch.suffix:
        return None
    point = arch.point(sweep.point)
    return 0 if point.module == f"{arch.blocks_path}.{{l}}" and point.io == "input" else 1


def _suffix_wavefront(sweep: Patching, src, entries, corrupt_final: torch.Tensor, same: dict, max_bytes: int,
                      count: Counter, stop):
    """Any component on a family whose blocks run on a suffix of positions (`Family.block_suffix`),
    every swept layer and patched position at once. A patch whose first position is p changes no
    position before p in any layer (the model is causal), so each block above it runs on positions
    p.. only, its mixers reading what the corrupt run leaves before p (keys and values, the SSM's
    state and conv inputs: `Family.record_prefix`, once per block). The rows of a patch of layer l
    (`_entering`) join at block l (resid_pre) or l + 1 (anything else): block k takes the rows of
    every layer joined below it at once, then the rows joining at k, the rows of every start p in
    one call (`_blocks_packed`). A patch of positions where the clean and corrupt component agree
    exactly (`record`'s same) is the corrupt run and is not run. The starts run in packs whose rows
    fit `max_bytes` between blocks (`_packs`), progress and stop once per pack.
    Returns ({(layer, patch index): final residual [d]}, stopped)."""
    handle, arch = sweep.handle, sweep.handle.arch
    L, offset, into_y = handle.n_layers, _suffix_start(sweep), _into_y(sweep)
    first = min(sweep.layers) + offset
    with handle.lock, torch.inference_mode():
        prefixes = {k: arch.record_prefix(handle.module, k, entries[k][0][0]) for k in range(first, L)}
    done = {(layer, i): corrupt_final[0] for layer in sweep.layers for i, patch in enumerate(sweep.patches)
            if same[layer][list(patch)].all()}  # all() of no position: the empty patch
    positions = _positions_per_call(handle, sweep.T, max_bytes)
    for pack in _packs(sweep, entries[0][0][0].shape[-1], max_bytes):
        if stop is not None and stop.is_set():
            return done, True
        rows, keys = {}, {p: [] for p, _ in pack}  # per start p, the residuals at positions p.. [R, T - p, d]
        with handle.lock, torch.inference_mode():
            for k in range(first, L + 1):
                layer = k - offset
                terms = _y_terms(sweep, layer, src[layer], entries[layer]) if into_y and layer in sweep.layers else None
                for p, group in pack:
                    run = [i for i in group if (layer, i) not in done] if layer in sweep.layers else []
                    if not run:
                        continue
                    joined = _entering(sweep, layer, src[layer], entries, corrupt_final, run, p, max_bytes, terms)
                    if k == L:  # past the last block only the last position is read
                        joined = joined[:, -1:]
                        if p in rows:
                            rows[p] = rows[p][:, -1:]
                    rows[p] = torch.cat([rows[p], joined]) if p in rows else joined
                    keys[p] += [(layer, i) for i in run]
                if k < L and rows:
                    rows = _blocks_packed(handle, k, rows, prefixes[k], positions)
        for p, final in rows.items():
            done.update(zip(keys[p], final[:, -1]))
        count.add(len(sweep.layers) * sum(len(group) for _, group in pack))
    return done, False


def _packs(sweep: Patching, d: int, max_bytes: int) -> list[list[tuple[int, list[int]]]]:
    """`_by_start`'s groups in packs, rising: a pack's rows (every swept layer's, held between blocks in
    fp32, [R, T − p, d] per start) fit in max_bytes, and a pack holds at least one group."""
    packs, size = [], 0
    for p, group in _by_start(sweep):
        need = FP32_BYTES * len(sweep.layers) * len(group) * (sweep.T - p) * d
        if not packs or size + need > max_bytes:
            packs, size = packs + [[]], 0
        packs[-1].append((p, group))
        size += need
    return packs


def _positions_per_call(handle, T: int, max_bytes: int) -> int:
    """Positions one packed block call may hold within max_bytes (at least T): a row's estimate
    (`Model.layer_bytes`) less what it counts per row whatever the length (a scan's carried states,
    which a packed call shares across its rows), per position."""
    per_position = max(1, handle.layer_bytes(T) - handle.layer_bytes(0)) / T
    return max(T, int(max_bytes // per_position))


def _blocks_packed(handle, layer: int, rows: dict, prefix, positions: int) -> dict:
    """Block `layer` on the rows of every start {p: [R, T − p, d]} (`Family.block_suffix`), in calls
    of at most `positions` positions each (whole rows, at least one per call)."""
    arch, outs, pieces, used = handle.arch, {p: [] for p in rows}, [], 0

    def run():
        for (p, _), out in zip(pieces, arch.block_suffix(handle.module, layer, prefix, pieces)):
            outs[p].append(out)

    for p, x in sorted(rows.items()):  # rising p: each prefix's state before p advances
        l, i = x.shape[1], 0
        while i < len(x):
            n = min(len(x) - i, (positions - used) // l)
            if n == 0 and pieces:
                run()
                pieces, used = [], 0
                continue
            n = max(n, 1)
            pieces.append((p, x[i:i + n]))
            used, i = used + n * l, i + n
    if pieces:
        run()
    return {p: torch.cat(out) for p, out in outs.items()}


def _entering(sweep: Patching, layer: int, src: torch.Tensor, entries, corrupt_final: torch.Tensor, group, p: int,
              max_bytes: int, terms: dict | None = None) -> torch.Tensor:
    """The residual at positions p.. [len(group), T - p, d] where the rows of each patch of `layer`
    join the suffixes (`_suffix_start`): for resid_pre and resid_post the corrupt residual there
    with the patch's positions written from the clean `src` (past the last block: the corrupt
    final residual, its last position only, [.., 1, d]); for an `into_y` point (`terms`: its
    `_y_terms`) block `layer`'s output finished from y (`Family.block_from_y`), the block's clean
    run read once; for any other point block `layer`'s output, the block run on every position with
    the point's hook writing the clean values."""
    handle, arch = sweep.handle, sweep.handle.arch
    patches = [sweep.patches[i] for i in group]
    point = arch.point(sweep.point)
    if point.module == f"{arch.blocks_path}.{{l}}":
        block = layer + (point.io != "input")  # the block the residual enters
        if block < handle.n_layers:
            base, start = entries[block][0][0][:, p:], p
        else:
            base, start = corrupt_final[:, None], sweep.T - 1
        local = [tuple(q - start for q in patch if q >= start) for patch in patches]
        return torch.where(_mask(sweep, local, base), src[:, start:].to(base.device, base.dtype), base)
    resid = entries[layer][0][0]
    if terms is not None:
        size = chunk_size(handle, None, sweep.T, max_bytes)
        return torch.cat([arch.block_from_y(handle.module, layer, terms, resid,
                                            terms["y"] + _patch_dy(sweep, layer, terms, patches[i:i + size]))[:, p:]
                          for i in range(0, len(patches), size)])

    def write(rows):
        def edit(value):
            chunk = [patches[i] for i in rows]
            value.copy_(torch.where(_mask(sweep, chunk, value), src.to(value.device, value.dtype), value))
        return edit

    size = chunk_size(handle, sweep.point, sweep.T, max_bytes)
    outs = []
    for first in range(0, len(patches), size):
        rows = range(first, min(len(patches), first + size))
        with temporary_hooks(arch.hook(handle.module, sweep.point, layer, write(rows))):
            outs.append(blocks_from(handle, layer, copies(resid, len(rows)), entries[layer], stop=layer + 1)[:, p:])
    return torch.cat(outs)


# --- reading the runs ---------------------------------------------------------------------------

def metric_tensor(logits: torch.Tensor, metric: str, answer: int, wrong: int | None) -> torch.Tensor:
    """The metric (`METRICS`) of last-position logits [N, V] → [N] in fp32, differentiable (the
    gradient attribution patching takes)."""
    logits = logits.float()
    if metric == "logit":
        return logits[:, answer]
    if metric == "prob":
        return torch.softmax(logits, -1)[:, answer]
    if metric == "logprob":
        return torch.log_softmax(logits, -1)[:, answer]
    if wrong is not None:
        return logits[:, answer] - logits[:, wrong]
    top2 = logits.topk(2, dim=-1)
    best_other = torch.where(top2.indices[:, 0] == answer, top2.values[:, 1], top2.values[:, 0])
    return logits[:, answer] - best_other


def metric_of(logits: torch.Tensor, metric: str, answer: int, wrong: int | None) -> np.ndarray:
    """`metric_tensor` of last-position logits [N, V], as float64 numbers."""
    return metric_tensor(logits, metric, answer, wrong).detach().cpu().numpy().astype(np.float64)


def recovery(m_patched, m_clean: float, m_corrupt: float):
    """(m_patched − m_corrupt) / (m_clean − m_corrupt); NaN where the unpatched runs agree."""
    gap = m_clean - m_corrupt
    return (np.asarray(m_patched) - m_corrupt) / gap if gap != 0 else np.full(np.shape(m_patched), np.nan)


@torch.no_grad()
def _rows(sweep: Patching, done: dict, finals, attrs) -> pd.DataFrame:
    """The frame of one model from the runs done ({(layer, patch index): final residual}), in
    sweep order: the LM head on every run's final residual at once, the unpatched runs' two rows
    included, and once per distinct residual (so equal residuals read equal metrics)."""
    handle = sweep.handle
    keys = [(layer, i) for layer in sweep.layers for i in range(len(sweep.patches)) if (layer, i) in done]
    if not keys:
        return pd.DataFrame(columns=COLUMNS)
    rows = torch.cat([torch.stack([done[key] for key in keys]), finals["clean"], finals["corrupt"]])
    # one LM-head row per distinct residual: a matmul's rounding depends on where a row falls in the
    # batch, and a run that ends on the clean (corrupt) residual must read exactly m_clean (m_corrupt)
    distinct, inverse = torch.unique(rows, dim=0, return_inverse=True)
    columns, answer, wrong = head_columns(sweep)
    with handle.lock:
        logits = head(handle, [distinct], columns)[inverse]
    _check_finite(sweep, logits, keys)
    metric = metric_of(logits, sweep.metric, answer, wrong)
    m_clean, m_corrupt = float(metric[-2]), float(metric[-1])
    attrs["m_clean"][handle.name], attrs["m_corrupt"][handle.name] = m_clean, m_corrupt
    return pd.DataFrame({
        "model": handle.name, "layer": [layer for layer, _ in keys],
        "kind": [handle.layer_kind(layer) for layer, _ in keys], "position": [sweep.labels[i] for _, i in keys],
        "component": sweep.component, "metric_patched": metric[:-2],
        "recovery": recovery(metric[:-2], m_clean, m_corrupt)})[list(COLUMNS)]


def head_columns(sweep: Patching) -> tuple[list[int] | None, int, int | None]:
    """(the head's columns the metric reads, the answer's and the wrong answer's index in them):
    logit and logit_diff against a wrong answer read one or two logits, the other metrics all of them."""
    if sweep.metric == "logit":
        return [sweep.answer], 0, None
    if sweep.metric == "logit_diff" and sweep.wrong is not None:
        return [sweep.answer, sweep.wrong], 0, 1
    return None, sweep.answer, sweep.wrong


def _attrs(sweeps) -> dict:
    components = {s.handle.name: s.component for s in sweeps}  # each family's default may differ
    component = sweeps[0].component if len(set(components.values())) == 1 else components
    return {"metric": sweeps[0].metric, "component": component, "m_clean": {}, "m_corrupt": {},
            "answer": {s.handle.name: s.answer for s in sweeps}, "wrong": {s.handle.name: s.wrong for s in sweeps},
            "tokens": {s.handle.name: s.handle.decode_tokens(s.clean[0].tolist()) for s in sweeps},
            "corrupt_tokens": {s.handle.name: s.handle.decode_tokens(s.corrupt[0].tolist()) for s in sweeps},
            "layers": {s.handle.name: s.layers for s in sweeps}}


def _check_finite(sweep: Patching, logits: torch.Tensor, keys) -> None:
    bad = (~torch.isfinite(logits).all(-1)).nonzero()
    if len(bad):
        i = bad[0].item()
        where = ("the unpatched clean run" if i == len(keys) else "the unpatched corrupt run" if i > len(keys)
                 else f"layer {keys[i][0]}, position {sweep.labels[keys[i][1]]}")
        raise NonFiniteError(f"{sweep.handle.name}: the last position's logits are NaN or infinite at {where} "
                             f"(patching {sweep.component!r}); the activations overflow {sweep.handle.dtype}")


def _check_cache_fits(sweep: Patching) -> None:
    """The clean values of every swept layer are held at once: refuse what would not fit."""
    handle = sweep.handle
    features = int(np.prod(handle.arch.feature_shape(handle.module.config, sweep.point)))
    need = FP32_BYTES * len(sweep.layers) * sweep.T * features
    memory.check_fits(need, f"caching {sweep.point!r} of {len(sweep.layers)} layers × {sweep.T} tokens of "
                            f"{handle.name}", "sweep fewer layers per call, or shorten the prompts")


# --- argument checks ---------------------------------------------------------------------------

def components(handle: Model) -> tuple[str, ...]:
    """The components `patch_sweep` accepts for this model: patchable points, then z.<head>."""
    arch = handle.arch
    heads = arch.dims(handle.module.config).get("heads") if arch.find("z") is not None else None
    return arch.patchable + (tuple(f"z.{h}" for h in range(heads)) if heads else ())


def _component(handle: Model, component) -> tuple[str, int | None]:
    valid = components(handle)
    if component in valid:
        if isinstance(component, str) and component.startswith("z."):
            return "z", int(component[2:])
        return component, None
    point = handle.arch.find(component) if isinstance(component, str) else None
    why = ("" if point is None else f"{component!r} has no position axis to patch; " if not point.patchable
           else "model-level points have no layer; ")
    heads = [c for c in valid if c.startswith("z.")]
    shown = [c for c in valid if not c.startswith("z.")] + ([f"z.0..z.{len(heads) - 1} (one head)"] if heads else [])
    raise ValueError(f"{handle.name}: component {component!r} cannot be patched; {why}valid: {', '.join(shown)}")


def _patches(positions, T: int):
    """(patches, labels) from the positions argument (module docstring)."""
    if positions is None:
        return tuple((p,) for p in range(T)), tuple(range(T))
    if isinstance(positions, str):
        if positions != "all":
            raise ValueError(f"positions must be None, 'all', or a list of positions / tuples of positions, "
                             f"got {positions!r}")
        return (tuple(range(T)),), ("all",)
    items = [positions] if is_int(positions) else positions
    try:
        items = list(items)
    except TypeError:
        raise ValueError(f"positions must be None, 'all', or a list of positions / tuples of positions, "
                         f"got {positions!r}") from None
    if not items:
        raise ValueError("positions must name at least one patch; a patch of nothing is the tuple ()")
    patches, labels = [], []
    for item in items:
        item = tuple(range(T)) if isinstance(item, str) and item == "all" else item
        group = item if isinstance(item, (tuple, list)) else (item,)
        bad = [p for p in group if not (is_int(p) and -T <= p < T)]
        if bad:
            raise ValueError(f"positions must be token positions in {-T}..{T - 1} for these {T}-token prompts "
                             f"(or tuples of them), got {item!r}")
        group = tuple(sorted(dict.fromkeys(int(p) % T for p in group)))
        patches.append(group)
        labels.append(group[0] if isinstance(item, (int, np.integer)) else
                      "all" if group == tuple(range(T)) else "none" if not group else ",".join(map(str, group)))
    return tuple(patches), tuple(labels)
