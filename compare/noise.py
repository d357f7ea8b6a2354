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

Fast path (`noise_sweep`): one clean forward caches the residual stream entering every layer;
for each layer l the blocks l.. run once on a batch of (level, trial) copies of that residual
with the noise added by a torch forward hook on the component, and the LM head runs only at the
last position. Where block l's output is affine in the noise (the family's `Point.affine`: h, y, resid_post…)
block l runs once per draw (a ray: per trial; fresh: per run) and each run restarts at block
l+1 from out_clean + level·(out(ε) − out_clean). Batches are chunked to stay within ``max_bytes`` and
logits are read READ_ROWS runs at a time, so only the result frame grows with the sweep; a
sweep whose frame would not fit in half the available memory is refused before any compute.
Level-0 rows are read from the clean forward itself (zero noise is no intervention), so they
equal `Model.logits` exactly.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import memory, points
from .mamba import SSM_POINTS
from .loading import cached_model
from .model import Model, NonFiniteError

DISTRIBUTIONS = ("gaussian", "uniform")
DRAWS = ("fresh", "ray")
SCALES = ("absolute", "relative")
COLUMNS = ("model", "layer", "component", "level", "trial", "hit", "p_target", "logit_diff",
           "predicted_id", "predicted")
DEFAULT_MAX_BYTES = 128 * 2**20  # per chunk: small enough that the big SSM tensors reuse heap memory
HEAD_ROWS = 256  # rows per LM-head matmul: enough to amortise streaming its weight
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


def prepare(prompt, *, model, target, component, layers=None, levels=None, trials=1,
            distribution="gaussian", scale="absolute", positions=None, seed=0, draws="fresh") -> Sweep:
    """Check every argument before any compute; ValueError names the argument and the valid values."""
    handle = _handle(model)
    ids = _prompt_ids(handle, prompt)
    T = ids.shape[1]
    component = _component(handle, component)
    layers = tuple(range(handle.n_layers)) if layers is None else _int_list(layers, "layers")
    if not layers:
        raise ValueError("layers must name at least one layer, or be None for all")
    for layer in layers:
        points.check(handle, component, layer)
    levels = np.linspace(0.0, 1.0, 100) if levels is None else _float_array(levels, "levels")
    if levels.ndim != 1 or levels.size == 0:
        raise ValueError(f"levels must be a non-empty 1-D array of noise levels, got shape {levels.shape}")
    if not np.all(np.isfinite(levels)) or np.any(levels < 0):
        raise ValueError(f"levels must be finite and >= 0, got {levels[~(np.isfinite(levels) & (levels >= 0))][:5]}")
    if not isinstance(trials, (int, np.integer)) or isinstance(trials, bool) or trials < 1:
        raise ValueError(f"trials must be an int >= 1, got {trials!r}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if draws not in DRAWS:
        raise ValueError(f"draws must be one of {DRAWS}, got {draws!r}")
    _check_result_fits(len(layers) * levels.size * int(trials))
    return Sweep(handle, ids, _target_id(handle, target), component, layers, levels, int(trials),
                 distribution, scale, _positions(positions, T), int(seed), draws)


def noise_sweep(prompt, *, model, target, component, layers=None, levels=None, trials=1,
                distribution="gaussian", scale="absolute", positions=None, seed=0, draws="fresh",
                max_bytes: int = DEFAULT_MAX_BYTES, progress=None, stop=None) -> pd.DataFrame:
    """Layers × levels × trials of noise on `component`; one row per run, columns `COLUMNS`.

    prompt: text or token IDs [T]. model: a `Model` or a source for `compare.load_model`.
    component: a per-layer hook point of the model; on Mamba, "h" feeds the noise into the
    recurrence (later positions see it) and "h_readout" only into y at the noised positions.
    target: a string that is exactly one token (" Mary") or a token ID. layers: default all.
    levels: array of noise levels >= 0 (default 100 levels in [0, 1]). positions: token
    positions noised (default all; negative counts from the end). hit: the argmax at the last
    position is the target; logit_diff: target's logit minus the best other token's.
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
            check_finite(sweep, logits, [f"layer {layer}, level {lv:g}, trial {key.trial}" for lv, key in noised])
            by_run = dict(zip(noised, logits))
            layer_frames.append(rows(sweep, layer, runs, torch.stack([by_run.get(run, clean) for run in runs])))
        frames += layer_frames
        done.append(layer)
        if progress is not None:
            progress(len(done), len(sweep.layers))
    return to_frame(sweep, frames, layers_done=tuple(done))


def noisy_logits(prompt, *, model, target, component, layers, level: float, trial: int = 0,
                 distribution="gaussian", scale="absolute", positions=None, seed=0,
                 draws="fresh") -> pd.DataFrame:
    """The flattened-L data: last-position logits over the vocabulary, clean and with noise.

    One noised run per layer: the ε that ``noise_sweep(..., levels=[level], trials=trial + 1,
    draws=draws)`` gives that seed, layer and trial (a ray's ε is the same at any level);
    columns model, layer, component, level, run ("clean" / "noisy"), token_id, logit.
    """
    if not isinstance(trial, (int, np.integer)) or isinstance(trial, bool) or trial < 0:
        raise ValueError(f"trial must be an int >= 0, got {trial!r}")
    sweep = prepare(prompt, model=model, target=target, component=component, layers=layers,
                    levels=one(level, "level"), trials=int(trial) + 1, distribution=distribution, scale=scale,
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
               level_index: int | None = None) -> torch.Tensor:
    """ε for one (seed, layer, trial) ray, or with `level_index` one fresh draw: fp32 on the CPU,
    unit variance (see the module docstring)."""
    entropy = [seed, layer, trial] + ([] if level_index is None else [level_index + 1])
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    gen = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    if distribution == "gaussian":
        return torch.randn(tuple(shape), generator=gen)
    return (torch.rand(tuple(shape), generator=gen) * 2 - 1) * 3 ** 0.5


def rms(value: torch.Tensor) -> torch.Tensor:
    """Root mean square over every element: the unit of scale="relative"."""
    return value.float().pow(2).mean().sqrt()


def sweep_noise(sweep: Sweep, layer: int, chunk, clean_value: torch.Tensor) -> torch.Tensor:
    """[b, P, *feature] noise for the (level, `Draw`) runs of one chunk."""
    unit = rms(clean_value) if sweep.scale == "relative" else torch.tensor(1.0)
    eps = {key: draw_noise(clean_value.shape, seed=sweep.seed, layer=layer, trial=key.trial,
                           level_index=key.level_index, distribution=sweep.distribution)
           for key in {key for _, key in chunk}}
    return torch.stack([level * unit * eps[key] for level, key in chunk])


# --- the batched engine ------------------------------------------------------------------

@torch.no_grad()
def clean_pass(handle: Model, ids: torch.Tensor, layers: Sequence[int]):
    """The clean last-position logits [V] (exactly `Model.logits`) and the inputs of each layer.

    Returns (logits, {layer: entry}); an entry holds what `run_noised` needs to restart the
    forward at that layer: the residual [1, T, d] and, for GPT-2, the block's mask/position args.
    """
    blocks = _blocks(handle)
    cache = {}

    def keep(layer):
        def hook(module, args, kwargs):
            cache[layer] = (args, kwargs)
        return hook

    with handle.lock:  # the hooks exist only while this call owns the model (`isolation`)
        handles = [blocks[l].register_forward_pre_hook(keep(l), with_kwargs=True) for l in layers]
        try:
            logits = handle.logits(ids)[0, -1]
        finally:
            for h in handles:
                h.remove()
    return logits, cache


def read_groups(runs: list) -> list[list]:
    """The runs in blocks of READ_ROWS: logits are read block by block, so memory does not grow with the sweep."""
    return [runs[i:i + READ_ROWS] for i in range(0, len(runs), READ_ROWS)]


def sweep_logits(sweep: Sweep, layer: int, entry, runs: list, *, max_bytes: int = DEFAULT_MAX_BYTES):
    """Last-position logits [len(runs), V] of a sweep's (level, `Draw`) runs at one layer.

    The caller holds ``sweep.handle.lock``: the engine registers torch hooks on the shared
    model and calls its blocks one by one, which an nnsight trace in another thread would see.
    """
    engine = run_rays if sweep.handle.arch.point(sweep.component).affine else run_noised
    noise = lambda chunk, value: sweep_noise(sweep, layer, chunk, value)
    return engine(sweep.handle, sweep.component, layer, entry, sweep.positions, runs, noise, max_bytes=max_bytes)


@torch.inference_mode()
def run_noised(handle: Model, component: str, layer: int, entry, positions: Sequence[int], runs: list,
               noise: Callable, *, max_bytes: int = DEFAULT_MAX_BYTES) -> torch.Tensor:
    """Last-position logits [len(runs), V] of the forward restarted at `layer` with noise added.

    noise(chunk, clean_value) → [len(chunk), P, *feature]: called inside the hook with the
    clean component at the noised positions [P, *feature] (all batch rows are clean there).
    """
    last_only = layer < len(_blocks(handle)) - 1  # else the final block carries the hook
    return _head(handle, [out[:, -1] for out in _hooked_chunks(handle, component, layer, entry, positions, runs,
                                                               noise, max_bytes, last_only=last_only)])


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
    clean = _blocks_from(handle, layer, resid, entry, stop=layer + 1)
    size = _chunk_size(handle, None, resid.shape[1], max_bytes)
    blocks = _blocks(handle)
    next_on_rays = handle.arch.next_on_rays(handle.module, layer)
    if next_on_rays:
        clean_proj = _ray_projection(blocks[layer + 1], clean)
    keys = list(dict.fromkeys(key for _, key in runs))
    finals = [None] * len(runs)
    # responses are held `size` keys at a time: a few rays' responses serve every run, while fresh draws
    # have one key per run and a read group's worth would not fit for a long prompt
    for k in range(0, len(keys), size):
        row = {key: i for i, key in enumerate(keys[k:k + size])}
        unit = _hooked_chunks(handle, component, layer, entry, positions, [(1.0, key) for key in row], noise,
                              max_bytes, stop=layer + 1)
        response = torch.cat(unit) - clean
        if next_on_rays:
            response_proj = _ray_projection(blocks[layer + 1], response)
        mine = [i for i, (_, key) in enumerate(runs) if key in row]
        for start in range(0, len(mine), size):
            chunk = [runs[i] for i in mine[start:start + size]]
            level = torch.tensor([lv for lv, _ in chunk], dtype=response.dtype, device=response.device)
            idx = [row[key] for _, key in chunk]
            inputs = torch.addcmul(clean, level[:, None, None], response[idx])
            if next_on_rays:
                inputs = _mamba_block_on_rays(blocks[layer + 1], inputs, level, clean_proj, response_proj[idx],
                                              last_only=layer + 2 == len(blocks))
            out = _blocks_from(handle, layer + 2 if next_on_rays else layer + 1, inputs, entry, last_only=True)
            for i, final in zip(mine[start:start + size], out[:, -1]):
                finals[i] = final
    return _head(handle, [torch.stack(finals)])


def _ray_projection(block, value: torch.Tensor) -> torch.Tensor:
    """in_proj's matmul, without bias, on the clean output [1, T, d] or responses [K, T, d] after
    the block's RMSNorm weight g: W(g ⊙ value), [*, T, 2 d_in]."""
    return F.linear(value * block.norm.weight, block.mixer.in_proj.weight)


def _mamba_block_on_rays(block, inputs, level, clean_proj, response_proj, last_only: bool) -> torch.Tensor:
    """The Mamba block on inputs = clean + level · response [b, T, d], in_proj computed from the
    ray projections (`_ray_projection`) instead of once per run.

    RMSNorm only scales each row, by 1/rms(row), before its weight g; so
    in_proj(RMSNorm(inputs)) = (W(g ⊙ clean) + level · W(g ⊙ response)) / rms(inputs) + bias.
    The block's hook points are not called: nothing hooks the block after the injected one.
    """
    inv_rms = torch.rsqrt(inputs.pow(2).mean(-1, keepdim=True) + block.norm.eps)
    xz = torch.addcmul(clean_proj, level[:, None, None], response_proj).mul_(inv_rms)
    if block.mixer.in_proj.bias is not None:
        xz += block.mixer.in_proj.bias
    x, z = xz.chunk(2, dim=-1)
    out = block.mixer.mix(x, z[:, -1:] if last_only else z, last_only)
    return (inputs[:, -1:] if last_only else inputs) + out


def _hooked_chunks(handle: Model, component: str, layer: int, entry, positions: Sequence[int], runs: list,
                   noise: Callable, max_bytes: int, **blocks) -> list[torch.Tensor]:
    """Per chunk of runs, the residual after blocks from `layer` (`_blocks_from` arguments
    `blocks`) with each run's noise added to the component at `positions`."""
    resid = entry[0][0]
    size = _chunk_size(handle, component, resid.shape[1], max_bytes)
    out = []
    for start in range(0, len(runs), size):
        chunk = runs[start:start + size]
        with _injected(handle, component, layer, positions, lambda value, chunk=chunk: noise(chunk, value)):
            out.append(_blocks_from(handle, layer, _copies(resid, len(chunk)), entry, **blocks))
    return out


def _chunk_size(handle: Model, component: str | None, T: int, max_bytes: int) -> int:
    """Runs per chunk; component None: no hook, the forward of the blocks after the injected one."""
    per_item = handle.layer_bytes(T, ssm=component in SSM_POINTS)
    if per_item > max_bytes:
        raise ValueError(f"one noised forward needs about {per_item / 2**20:.0f} MiB, more than "
                         f"max_bytes={max_bytes / 2**20:.0f} MiB; raise max_bytes or shorten the prompt")
    return max(1, max_bytes // per_item)


def _blocks_from(handle: Model, start: int, resid: torch.Tensor, entry, stop: int | None = None,
                 last_only: bool = False) -> torch.Tensor:
    """The residual [b, T, d] after blocks start..stop-1 (default: to the last block), from the
    clean forward's cached `entry` (`Family.blocks_from`).

    last_only: the model's final block (Mamba; it must carry no hook) computes its output at
    the last position only, [b, 1, d], which is all the LM head reads.
    """
    return handle.arch.blocks_from(handle.module, start, resid, entry, stop=stop, last_only=last_only)


def _copies(resid: torch.Tensor, b: int) -> torch.Tensor:
    """b writable copies of the residual [1, T, d]: the hooks edit the batch in place."""
    return resid.repeat(b, *[1] * (resid.dim() - 1))


def _head(handle: Model, finals: list) -> torch.Tensor:
    """Logits [N, V] from the last-position residuals of every chunk.

    The LM head streams its whole weight (154 MB at a 50k vocabulary) per matmul, so it runs
    on HEAD_ROWS residuals at a time rather than once per chunk of a few runs.
    """
    if not finals:
        return torch.empty(0, handle.vocab_size)
    resid = torch.cat(finals)
    return torch.cat([handle.arch.head(handle.module, resid[i:i + HEAD_ROWS])[:, : handle.vocab_size].float()
                      for i in range(0, len(resid), HEAD_ROWS)])


@contextmanager
def _injected(handle, component, layer, positions, noise):
    """Within: the component at `layer` gets noise(clean_value) added at `positions`, in place."""
    idx = torch.tensor(list(positions))

    def add(value):
        value[:, idx] += noise(value[0, idx]).to(value.device, value.dtype)

    hook = _injection_hook(handle, component, layer, add)
    try:
        yield
    finally:
        hook.remove()


def _injection_hook(handle, component, layer, add):
    """A torch hook that edits the component in place, as ``point(...)[:, pos] += noise`` does in a trace."""
    return handle.arch.hook(handle.module, component, layer, add)


def _blocks(handle):
    return handle.arch.blocks(handle.module)


# --- reading the prediction ------------------------------------------------------------------

def check_finite(sweep: Sweep, logits: torch.Tensor, runs: list[str]) -> None:
    """Raise NonFiniteError naming the first run (described in `runs`) whose logits [N, V] are
    NaN or infinite: argmax would read them as a prediction of token 0."""
    bad = (~torch.isfinite(logits).all(-1)).nonzero()
    if len(bad):
        raise NonFiniteError(
            f"{sweep.handle.name}: noise on {sweep.component!r} made the last position's logits NaN or infinite, "
            f"first at {runs[bad[0].item()]} (scale={sweep.scale!r}); the activations overflow: lower the "
            "levels, or use scale='relative'")


def rows(sweep: Sweep, layer: int, runs: list, logits: torch.Tensor) -> pd.DataFrame:
    """One row per run from last-position logits [len(runs), V]."""
    read = read_prediction(logits, sweep.target)
    return pd.DataFrame({
        "model": sweep.handle.name, "layer": layer, "component": sweep.component,
        "level": [lv for lv, _ in runs], "trial": [key.trial for _, key in runs],
        "hit": read["predicted_id"] == sweep.target, **read,
        "predicted": sweep.handle.decode_tokens(read["predicted_id"].tolist()),
    })


def read_prediction(logits: torch.Tensor, target: int) -> dict[str, np.ndarray]:
    """p_target, logit_diff (target minus the best other token) and predicted_id from logits [N, V]."""
    logits = logits.float()
    predicted = logits.argmax(-1)
    top2 = logits.topk(2, dim=-1).values
    # the best other token is the runner-up when the target leads, else the leader (no [N, V] copy)
    best_other = torch.where(predicted == target, top2[:, 1], top2[:, 0])
    return {"p_target": torch.softmax(logits, dim=-1)[:, target].numpy(),
            "logit_diff": (logits[:, target] - best_other).numpy(),
            "predicted_id": predicted.numpy()}


def to_frame(sweep: Sweep, frames: list, layers_done: tuple[int, ...] | None = None) -> pd.DataFrame:
    """The sweep's rows with its parameters in ``attrs``; `layers_done` short of the sweep's
    layers marks a stopped sweep."""
    layers_done = sweep.layers if layers_done is None else layers_done
    df = (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS))[list(COLUMNS)]
    df.attrs.update(target=sweep.target, distribution=sweep.distribution, scale=sweep.scale, draws=sweep.draws,
                    positions=sweep.positions, seed=sweep.seed, layers_done=tuple(layers_done),
                    stopped=len(layers_done) < len(sweep.layers))
    return df


def check_callbacks(progress, stop) -> None:
    """The progress and stop arguments of the engine's long calls (sweeps, channels, compare)."""
    if progress is not None and not callable(progress):
        raise ValueError(f"progress: must be a callable (done, total) or None, got {progress!r}")
    if stop is not None and not callable(getattr(stop, "is_set", None)):
        raise ValueError(f"stop: must have an is_set() method (e.g. a threading.Event) or be None, got {stop!r}")


# --- argument checks ---------------------------------------------------------------------------

def _handle(model) -> Model:
    if isinstance(model, Model):
        return model
    if isinstance(model, str):
        return cached_model(model)
    raise ValueError(f"model must be a loaded Model or a source string for compare.load_model, "
                     f"got {type(model).__name__}")


def _prompt_ids(handle: Model, prompt) -> torch.Tensor:
    if isinstance(prompt, str):
        return handle.as_input(handle.encode(prompt))
    ids = handle.as_input(prompt)
    if ids.shape[0] != 1:
        raise ValueError(f"prompt must be one sequence (text or token IDs [T]), got shape {tuple(ids.shape)}")
    return ids


def _component(handle: Model, component) -> str:
    arch = handle.arch
    if component in arch.noisable:
        return component
    point = arch.find(component)
    why = ("" if point is None else f"{point.refused}; " if point.refused
           else "model-level points have no layer to sweep; ")
    raise ValueError(f"{handle.name}: component {component!r} cannot be noised; {why}valid: "
                     f"{', '.join(arch.noisable)}")


def _target_id(handle: Model, target) -> int:
    if isinstance(target, str):
        return handle.single_token(target, what="target")
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool) and 0 <= target < handle.vocab_size:
        return int(target)
    raise ValueError(f"target must be a one-token string or a token ID in 0..{handle.vocab_size - 1}, got {target!r}")


def one(value, name: str) -> list:
    """[value] for `prepare`, refusing a sequence given where one level or layer is meant."""
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a single value, not a sequence, got {value!r}")
    return [value]


def _float_array(values, name: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers, got {values!r}") from None


def _int_list(values, name: str) -> tuple[int, ...]:
    values = [values] if isinstance(values, (int, np.integer)) else list(values)
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{name} must be ints, got {values!r}")
    return tuple(dict.fromkeys(int(v) for v in values))


def _positions(positions, T: int) -> tuple[int, ...]:
    if positions is None:
        return tuple(range(T))
    values = _int_list(positions, "positions")
    if not values or any(not -T <= p < T for p in values):
        raise ValueError(f"positions must be non-empty token positions in {-T}..{T - 1} for this "
                         f"{T}-token prompt, got {list(values)}")
    return tuple(dict.fromkeys(p % T for p in values))
