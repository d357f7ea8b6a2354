"""Channel sensitivity: which coordinates of one layer's component carry the prediction.

For each channel c of the component (a coordinate of its per-position feature) the noise of
`noise.noise_sweep` — the same ε of (seed, layer, trial), the same level and scale — is kept on
that channel only and zeroed elsewhere. A channel's `flip_rate` is the fraction of trials whose
last-position prediction differs from the clean one. A point with several feature axes is ranked
along each, and the axes are named by the family's glossary letters for the point
(`Point.letters`): Mamba's h [d_in, n] per position has axes "d_in" (one channel, all its
states) and "n" (one state index across all channels); Mamba-2's x [heads, p] has "heads" and
"p", its h [heads, p, n] all three; a transformer's resid_post has "d".

Every (axis, channel, trial) run is one row of a batch of the restart engine
(`restart.run_noised`), restarted at the layer from the cached clean residual; on a point whose
noise changes the SSM's y linearly (`Point.into_y`) the layer runs once, clean, and each run
restarts from its y (`restart.run_into_y`), no state materialised.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..handle.inputs import byte_budget, is_int
from ..base.checks import check_callbacks
from .noise import Draw, one, prepare, read_groups, sweep_noise
from .signatures import CHANNEL_SENSITIVITY
from ..engine.prediction import read_prediction, warn_overflow
from ..engine.restart import DEFAULT_MAX_BYTES, clean_pass, run_into_y, run_noised
from ..engine.convention import analysis

COLUMNS = ("model", "layer", "kind", "component", "axis", "channel", "flip_rate", "p_target", "logit_diff", "rank",
           "overflowed")


def feature_shape(handle, component: str) -> tuple[int, ...]:
    """The per-position shape of a layer component: (d,), (d_in,), (n,) or (d_in, n) (`Family.feature_shape`)."""
    return handle.arch.feature_shape(handle.module.config, component)


def feature_axes(handle, component: str) -> dict[str, int]:
    """{glossary letter: size} of a layer component's per-position axes, in order (`Point.letters`):
    the `axis` labels of a ranking, e.g. {"d_in": 1536, "n": 16} for Mamba's h."""
    letters = handle.arch.point(component).letters[2:]
    return dict(zip(letters, feature_shape(handle, component)))


@analysis
def channel_sensitivity(prompt, *, model, target, component=None, layer: int, level: float, trials: int = 8,
                        seed: int = 0, distribution: str = "gaussian", scale: str = "relative",
                        positions=None, max_bytes: int = DEFAULT_MAX_BYTES, progress=None,
                        stop=None) -> pd.DataFrame:
    """Channels ranked by how often noise restricted to them flips the prediction; columns `COLUMNS`.

    Arguments as in `noise.noise_sweep` (the calling convention too: a list of models gives rows for
    each), with one layer and one level. p_target and logit_diff
    are means over trials; rank 1 is the most sensitive channel of its axis. A run whose logits
    overflowed (NaN or infinite) has no prediction: it counts as a flip, and its p_target and
    logit_diff are left out of the means (NaN where every trial overflowed); the column
    `overflowed` counts them per channel, ``df.attrs["overflowed"]`` in all, and they are warned
    about once (`prediction.OverflowRunsWarning`).
    progress: called as progress(runs_done, runs_total) after each block of READ_ROWS runs.
    stop: anything with ``is_set()``, checked before each block; once set, the channels whose
    runs finished are returned, with ``df.attrs["stopped"] = True``.
    """
    handle = model  # one loaded handle (`engine.convention`)
    L = handle.n_layers
    if not (is_int(one(layer, "layer")[0]) and -L <= layer < L):
        raise ValueError(f"layer must be an int in 0..{L - 1} (negative counts from the end) for {handle.name}, "
                         f"got {layer!r}")
    level = CHANNEL_SENSITIVITY["level"].validate(one(level, "level")[0])  # its signature; the rest, noise's
    sweep = prepare(prompt, model=handle, target=target, component=component, layers=[layer],
                    levels=[level], trials=trials, distribution=distribution, scale=scale,
                    positions=positions, seed=seed)
    max_bytes = byte_budget(max_bytes)
    check_callbacks(progress, stop)
    handle, layer, level = sweep.handle, sweep.layers[0], float(sweep.levels[0])
    sizes = feature_axes(handle, sweep.component)
    axes = {axis: dim for dim, axis in enumerate(sizes)}
    runs = [(axis, c, t) for axis, size in sizes.items() for c in range(size) for t in range(sweep.trials)]

    def noise(chunk, value):
        full = sweep_noise(sweep, layer, [(level, Draw(t)) for _, _, t in chunk], value)
        mask = torch.zeros_like(full)
        for i, (axis, c, _) in enumerate(chunk):
            # full is [b, P, *feature]: feature axis k is dim 2 + k
            mask[i].select(1 + axes[axis], c).fill_(1)
        return full * mask

    clean, resid = clean_pass(handle, sweep.ids, sweep.layers)
    reads, done = [], 0
    for group in read_groups(runs):
        if stop is not None and stop.is_set():
            break
        with handle.lock:  # per block of runs, so other callers get the model between blocks
            logits = _run(handle, sweep.component, layer, resid[layer], sweep.positions, group, noise, max_bytes)
        reads.append(read_prediction(logits, sweep.target))
        done += len(group)
        if progress is not None:
            progress(done, len(runs))
    # a stopped sweep keeps whole channels only: runs are ordered (axis, channel, trial)
    stopped, kept = done < len(runs), done - done % sweep.trials
    runs = runs[:kept]
    read = {key: np.concatenate([r[key] for r in reads])[:kept] if reads else np.empty(0)
            for key in ("p_target", "logit_diff", "predicted_id", "finite")}
    per_run = pd.DataFrame({
        "axis": [a for a, _, _ in runs], "channel": [c for _, c, _ in runs],
        "flip": read.pop("predicted_id") != clean.argmax().item(), "overflowed": ~read.pop("finite").astype(bool),
        **read,
    })
    overflowed = int(per_run["overflowed"].sum())
    df = (per_run.groupby(["axis", "channel"], sort=False)
          .agg(flip_rate=("flip", "mean"), p_target=("p_target", "mean"), logit_diff=("logit_diff", "mean"),
               overflowed=("overflowed", "sum"))
          .reset_index()
          .sort_values(["axis", "flip_rate", "p_target"], ascending=[True, False, True], kind="stable"))
    df["rank"] = df.groupby("axis").cumcount() + 1
    df.insert(0, "model", handle.name)
    df.insert(1, "layer", layer)
    df.insert(2, "kind", handle.layer_kind(layer))
    df.insert(3, "component", sweep.component)
    df = df.reset_index(drop=True)[list(COLUMNS)]
    df.attrs["stopped"] = stopped
    df.attrs["overflowed"] = overflowed
    if overflowed:
        warn_overflow(overflowed, kept, f"{handle.name}: channel noise on {sweep.component!r} at layer {layer} "
                      f"(scale={sweep.scale!r}, level {level:g})", stacklevel=3)
    return df


def _run(handle, component: str, layer: int, entry, positions, group: list, noise, max_bytes: int) -> torch.Tensor:
    """Last-position logits of a block of (axis, channel, trial) runs: restarted from y where noise
    on the component changes the SSM's y linearly (`Point.into_y`: Mamba-2's and the hybrids' h,
    write, h_readout, B; a channel's masked noise is a noise like any other, each run its own
    key at level 1), else by the noised block (`restart.run_noised`)."""
    if not handle.arch.point(component).into_y:
        return run_noised(handle, component, layer, entry, positions, group, noise, max_bytes=max_bytes)
    return run_into_y(handle, component, layer, entry, positions, [(1.0, run) for run in group],
                      lambda chunk, value: noise([run for _, run in chunk], value), max_bytes=max_bytes)
