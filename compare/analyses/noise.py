"""Noise injection: add noise to one hook point of one layer and read whether the prediction survives.

The experiment: run the prompt, add ``level · ε`` to a component (a hook point) at the chosen
positions of one layer, and read the last position's next-token prediction. Sweeping layers ×
levels × trials gives the hit curves that `phase.phase_transition` fits.

Noise ε, shape [P, *feature] (P noised positions):
    gaussian   ε ~ N(0, 1)
    uniform    ε ~ U(-√3, √3)      unit variance too, so a level means the same spread in both
Which ε a run gets (`draws`, a `Draw` key per run):
    fresh      one ε per (seed, layer, level index, trial): every run is an independent draw,
               so a hit curve is levels × trials independent Bernoulli trials (the default).
    ray        one ε per (seed, layer, trial), the same at every level: the level only scales
               it, so a trial's hit curve is a walk along one direction, crossing the
               transition about once.
The draw comes from a `torch.Generator` seeded by ``numpy.random.SeedSequence``: [seed, layer,
trial] for a ray, [seed, layer, trial, level index + 1] for a fresh draw (SeedSequence pads
with zeros, so the + 1 keeps every fresh draw apart from every ray). The same key gets the same
ε in any batch or chunk, in the fast path and in the reference (`noise_ref.noise_sweep_ref`)
alike.
    scale="absolute"   noise = level · ε
    scale="relative"   noise = level · RMS · ε, RMS over all elements of the component at the
                       noised positions in the clean run: levels then compare across
                       components and models.

Which variant is which on Mamba's state (the foundation's semantics, `mamba.py`):
    h           the noise is added inside the recurrence, h_t = Ā_t h_{t-1} + w_t + noise_t, so
                noise at position t also reaches every later position through Ā.
    h_readout   read-out only: y_t = C_t · (h_t + noise_t) at the noised positions; the
                recurrence never sees it.
GPT-2's `pattern` is refused: its hook point is the probabilities attention returns after using
them, so an edit there changes nothing downstream.

Fast path (`noise_sweep`): the restart engine (`restart`) caches the residual stream entering
every layer in one clean forward; for each layer l the blocks l.. run once on a batch of
(level, draw) copies of that residual with the noise added to the component, and the LM head
runs only at the last position (on an affine component, once per draw; see `restart`). Logits
are read READ_ROWS runs at a time (`read_groups`) into rows (`prediction`), so only the result
frame grows with the sweep; a sweep whose frame would not fit in half the available memory is
refused before any compute. Level-0 rows are read from the clean forward itself (zero noise is
no intervention), so they equal `Model.logits` exactly.
A run whose logits are not finite is a row too (finite=False, no prediction, a miss: see
`prediction`); `noisy_logits`, one forward per layer, raises `NonFiniteError` instead.

Modules: this one checks the arguments (`prepare`, `Sweep`), draws the noise and runs the
public calls; `restart` is the engine; `prediction` reads the logits into rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch

from ..base import memory
from ..handle import points
from ..handle.inputs import byte_budget, handle_of, layer_list, position_list, prompt_ids, token_id
from ..base.checks import check_callbacks
from ..handle.model import Model, NonFiniteError
from ..engine.prediction import COLUMNS, rows, to_frame  # noqa: F401 (COLUMNS: the columns of a sweep, part of this API)
from ..engine.restart import DEFAULT_MAX_BYTES, clean_pass, run_into_y, run_noised, run_rays
from ..engine.convention import analysis, component_of

from .signatures import DISTRIBUTIONS, DRAWS, NOISE_SWEEP, NOISY_LOGITS, SCALES  # noqa: F401 (the allowed values, exported here too)

RESULT_ROW_BYTES = 256  # one result row while the frames are concatenated (~104 B measured in the frame)
READ_ROWS = 256  # runs whose logits [V] are held at once (51 MB at a 50k vocabulary, ~4 copies live)


class Draw(NamedTuple):
    """Which ε a run adds (see the module docstring): rays share theirs across levels."""
    trial: int
    level_index: int | None = None  # None: a ray, the same ε at every level


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: everything both the fast path and the reference need."""
    handle: Model
    ids: torch.Tensor  # [1, T]
    target: int
    component: str
    layers: tuple[int, ...]
    levels: np.ndarray  # [K], finite, >= 0
    trials: int
    distribution: str
    scale: str
    positions: tuple[int, ...]  # non-negative, unique
    seed: int
    draws: str

    @property
    def runs(self) -> list[tuple[float, Draw]]:
        """Every (level, draw) of one layer, in the order of the result's rows (level-major)."""
        return [(float(lv), Draw(t, None if self.draws == "ray" else k))
                for k, lv in enumerate(self.levels) for t in range(self.trials)]


def prepare(prompt, *, model, target, component=None, layers=None, levels=None, trials=1,
            distribution="gaussian", scale="absolute", positions=None, seed=0, draws="fresh",
            dtype=None) -> Sweep:
    """Check every argument before any compute; ValueError names the argument and the valid values."""
    handle = handle_of(model, dtype)
    ids = prompt_ids(handle, prompt)
    T = ids.shape[1]
    component = _component(handle, component_of(handle, component))
    layers = layer_list(handle, layers, point=component)  # negative counts from the end, as in patch_sweep and knockout
    for layer in layers:
        points.check(handle, component, layer)
    given = NOISE_SWEEP.check(**({} if levels is None else {"levels": levels}), trials=trials,  # its signature
                              distribution=distribution, scale=scale, seed=seed, draws=draws)
    levels = np.linspace(0.0, 1.0, 100) if levels is None else np.asarray(given["levels"], dtype=float)
    _check_result_fits(len(layers) * levels.size * int(trials))
    positions = tuple(range(T)) if positions is None else position_list(positions, T)
    return Sweep(handle, ids, token_id(handle, target, "target"), component, layers, levels, int(trials),
                 distribution, scale, positions, int(seed), draws)


@analysis
def noise_sweep(prompt, *, model, target, component=None, layers=None, levels=None, trials=1,
                distribution="gaussian", scale="absolute", positions=None, seed=0, draws="fresh",
                max_bytes: int = DEFAULT_MAX_BYTES, progress=None, stop=None) -> pd.DataFrame:
    """Layers × levels × trials of noise on `component`; one row per run, columns `COLUMNS`.

    prompt: text or token IDs [T]. model, dtype, device, progress, stop: the calling convention
    (`engine.convention`): one `Model` or source, or a list of them (rows for each, side by side;
    each model's attrs in ``attrs["by_model"]``).
    component: a per-layer hook point of the model (default: its family's, `Family.default_component`,
    "h" on Mamba, "resid_post" on a transformer); on Mamba, "h" feeds the noise into the
    recurrence (later positions see it) and "h_readout" only into y at the noised positions.
    target: a string that is exactly one token (" Mary") or a token ID. layers: default all
    (negative counts from the end).
    levels: array of noise levels >= 0 (default 100 levels in [0, 1]). positions: token
    positions noised (default all; negative counts from the end). hit: the argmax at the last
    position is the target; logit_diff: target's logit minus the best other token's.
    A run whose logits are NaN or infinite (the noise overflowed the activations) is a row with
    finite=False, hit=False and no prediction (p_target, logit_diff NaN; predicted_id -1;
    predicted None), counted in ``df.attrs["overflowed"]`` and warned once per sweep
    (`prediction.OverflowRunsWarning`): overflowing the network is a result, the prediction did
    not survive, and the rest of the sweep is kept.
    draws: "fresh" (default), an independent ε per (layer, level, trial), or "ray", one ε per
    (layer, trial) that the level only scales. Fresh is the default because it makes the
    default trials=1 sweep measurable: its runs are independent, so `phase_transition`
    resamples them and its 95 % interval covers (≥ 90 % in simulation, sharp to wide), while
    one ray crosses the transition once and gives one threshold, no interval (≥ 8 rays are
    needed); it is also what the thesis most plausibly did. Rays answer another question, how
    far along one fixed direction the prediction survives, and cost less on an affine
    component, whose injected block runs once per trial instead of once per run (noise on h at
    the mamba-130m shape, 24 layers × 10 levels × 1 trial, 2 threads: 7.0 s fresh, 5.5 s ray).
    max_bytes: memory budget of one batched chunk (estimated from shapes).
    progress: called as progress(layers_done, layers_total) after each layer.
    stop: anything with ``is_set()`` (a `threading.Event`), checked before each layer; once set,
    the sweep returns the rows of the layers it finished, with ``df.attrs["stopped"] = True``.
    ``df.attrs["layers_done"]`` always lists the finished layers.
    """
    sweep = prepare(prompt, model=model, target=target, component=component, layers=layers,
                    levels=levels, trials=trials, distribution=distribution, scale=scale,
                    positions=positions, seed=seed, draws=draws)
    max_bytes = byte_budget(max_bytes)
    check_callbacks(progress, stop)
    clean, resid = clean_pass(sweep.handle, sweep.ids, sweep.layers)
    frames, done = [], []
    for layer in sweep.layers:
        if stop is not None and stop.is_set():
            break
        layer_frames = []
        for runs in read_groups(sweep.runs):
            noised = [run for run in runs if run[0] > 0]
            with sweep.handle.lock:  # per block of runs, so other callers get the model between blocks
                logits = sweep_logits(sweep, layer, resid[layer], noised, max_bytes=max_bytes)
            by_run = dict(zip(noised, logits))
            layer_frames.append(rows(sweep, layer, runs, torch.stack([by_run.get(run, clean) for run in runs])))
        frames += layer_frames
        done.append(layer)
        if progress is not None:
            progress(len(done), len(sweep.layers))
    return to_frame(sweep, frames, layers_done=tuple(done))


@analysis
def noisy_logits(prompt, *, model, target, component=None, layers, level: float, trial: int = 0,
                 distribution="gaussian", scale="absolute", positions=None, seed=0,
                 draws="fresh") -> pd.DataFrame:
    """The flattened-L data: last-position logits over the vocabulary, clean and with noise.

    One noised run per layer: the ε that ``noise_sweep(..., levels=[level], trials=trial + 1,
    draws=draws)`` gives that seed, layer and trial (a ray's ε is the same at any level);
    columns model, layer, component, level, run ("clean" / "noisy"), token_id, logit.
    model, dtype, device, progress, stop: the calling convention (`engine.convention`).
    """
    level = NOISY_LOGITS["level"].validate(one(level, "level")[0])  # its signature; the rest, noise_sweep's
    trial = NOISY_LOGITS["trial"].validate(trial)
    sweep = prepare(prompt, model=model, target=target, component=component, layers=layers,
                    levels=[level], trials=int(trial) + 1, distribution=distribution, scale=scale,
                    positions=positions, seed=seed, draws=draws)
    clean, resid = clean_pass(sweep.handle, sweep.ids, sweep.layers)
    run = [sweep.runs[trial]]
    frames = []
    for layer in sweep.layers:
        with sweep.handle.lock:
            noisy = sweep_logits(sweep, layer, resid[layer], run)[0]
        check_finite(sweep, noisy[None], [f"layer {layer}, level {run[0][0]:g}, trial {trial}"])
        for name, logits in (("clean", clean), ("noisy", noisy)):
            frames.append(pd.DataFrame({"model": sweep.handle.name, "layer": layer, "component": sweep.component,
                                        "level": run[0][0], "run": name, "token_id": np.arange(len(logits)),
                                        "logit": logits.numpy()}))
    return pd.concat(frames, ignore_index=True)


def _check_result_fits(n_runs: int) -> None:
    """Refuse, before any compute, a sweep whose result alone would not fit in memory.

    The forwards are chunked to `max_bytes` and the logits read in blocks, so the result frame
    (one row per run) is the only part that grows with the sweep.
    """
    memory.check_fits(n_runs * RESULT_ROW_BYTES, f"this sweep of {n_runs:,} runs (layers × levels × trials)",
                      "sweep fewer layers, levels or trials, or split it into several calls")


# --- noise ---------------------------------------------------------------------------------

def draw_noise(shape: Sequence[int], *, seed: int, layer: int, trial: int, distribution: str,
               level_index: int | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """ε for one (seed, layer, trial) ray, or with `level_index` one fresh draw: fp32 on the CPU,
    unit variance (see the module docstring). out: a contiguous fp32 tensor of `shape` to draw
    into (the same values; a sweep's chunk is drawn in place, not allocated and stacked)."""
    entropy = [seed, layer, trial] + ([] if level_index is None else [level_index + 1])
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    gen = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    if distribution == "gaussian":
        return torch.randn(tuple(shape), generator=gen, out=out)
    return torch.rand(tuple(shape), generator=gen, out=out).mul_(2).sub_(1).mul_(3 ** 0.5)


def rms(value: torch.Tensor) -> torch.Tensor:
    """Root mean square over every element: the unit of scale="relative"."""
    return value.float().pow(2).mean().sqrt()


def sweep_noise(sweep: Sweep, layer: int, chunk, clean_value: torch.Tensor) -> torch.Tensor:
    """[b, P, *feature] noise for the (level, `Draw`) runs of one chunk: level · unit · ε.

    Each key's ε is drawn once, into its first row; a row of level 1 on the absolute scale
    is ε as drawn (the restart from y asks for unit noise and scales its change of y).
    """
    unit = rms(clean_value) if sweep.scale == "relative" else torch.tensor(1.0)
    out = torch.empty(len(chunk), *clean_value.shape)
    first = {}
    for i, (_, key) in enumerate(chunk):
        if key in first:
            out[i] = out[first[key]]
        else:
            first[key] = i
            draw_noise(clean_value.shape, seed=sweep.seed, layer=layer, trial=key.trial,
                       level_index=key.level_index, distribution=sweep.distribution, out=out[i])
    factor = torch.stack([level * unit for level, _ in chunk])  # fp32, as level · unit · ε rounds it
    if bool((factor != 1).any()):
        out.mul_(factor.view(-1, *[1] * clean_value.dim()))
    return out


# --- the sweep's runs, read in blocks --------------------------------------------------------

def read_groups(runs: list) -> list[list]:
    """The runs in blocks of READ_ROWS: logits are read block by block, so memory does not grow with the sweep."""
    return [runs[i:i + READ_ROWS] for i in range(0, len(runs), READ_ROWS)]


def sweep_logits(sweep: Sweep, layer: int, entry, runs: list, *, max_bytes: int = DEFAULT_MAX_BYTES):
    """Last-position logits [len(runs), V] of a sweep's (level, `Draw`) runs at one layer.

    The caller holds ``sweep.handle.lock``: the engine registers torch hooks on the shared
    model and calls its blocks one by one, which an nnsight trace in another thread would see.
    """
    point = sweep.handle.arch.point(sweep.component)
    engine = run_rays if point.affine else run_into_y if point.into_y else run_noised
    noise = lambda chunk, value: sweep_noise(sweep, layer, chunk, value)
    return engine(sweep.handle, sweep.component, layer, entry, sweep.positions, runs, noise, max_bytes=max_bytes)


# --- checks -------------------------------------------------------------------------------------

def check_finite(sweep: Sweep, logits: torch.Tensor, runs: list[str]) -> None:
    """Raise NonFiniteError naming the first run (described in `runs`) whose logits [N, V] are
    NaN or infinite: argmax would read them as a prediction of token 0."""
    bad = (~torch.isfinite(logits).all(-1)).nonzero()
    if len(bad):
        raise NonFiniteError(
            f"{sweep.handle.name}: noise on {sweep.component!r} made the last position's logits NaN or infinite, "
            f"first at {runs[bad[0].item()]} (scale={sweep.scale!r}); the activations overflow: lower the "
            "levels, or use scale='relative'")


# --- argument checks ---------------------------------------------------------------------------

def _component(handle: Model, component) -> str:
    arch = handle.arch
    if component in arch.noisable:
        return component
    point = arch.find(component)
    why = ("" if point is None else f"{point.refused}; " if point.refused
           else "model-level points have no layer to sweep; ")
    raise ValueError(f"{handle.name}: component {component!r} cannot be noised; {why}valid: "
                     f"{', '.join(arch.noisable)}")


def one(value, name: str) -> list:
    """[value] for `prepare`, refusing a sequence given where one level or layer is meant."""
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a single value, not a sequence, got {value!r}")
    return [value]

