"""Reading a prediction: what the last position's logits say about the target, as rows of a frame.

The noise sweep, its reference twin and channel sensitivity read their runs' logits here, so
their rows have one format (`COLUMNS`). A `sweep` here is any object with the fields these read
(`handle`, `component`, `target`, `layers`, `distribution`, `scale`, `draws`, `positions`, `seed`,
`levels`; `noise.Sweep` has them), so this module needs nothing of the analyses above it.

Overflow is data. A run whose last-position logits hold a NaN or an infinity (the noise blew
the activations past the dtype's range) did not keep its prediction: its row says so with
finite=False, hit=False and no prediction — p_target and logit_diff NaN, predicted_id -1,
predicted None (argmax would otherwise read NaN logits as token 0). A sweep counts these rows in
``df.attrs["overflowed"]`` and warns once (`OverflowRunsWarning`), so a long sweep keeps every
finished layer instead of stopping at its first overflow. A single forward (`Model.logits`,
`noise.noisy_logits`) still raises `NonFiniteError`: there the logits are the result.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch

COLUMNS = ("model", "layer", "kind", "component", "level", "trial", "hit", "p_target", "logit_diff",
           "predicted_id", "predicted", "finite")
NO_PREDICTION = -1  # predicted_id of a run whose logits were not finite


class OverflowRunsWarning(RuntimeWarning):
    """Some runs of a sweep overflowed: they are rows with finite=False, counted as misses."""


def rows(sweep, layer: int, runs: list, logits: torch.Tensor) -> pd.DataFrame:
    """One row per run from last-position logits [len(runs), V] (a run that overflowed: no prediction)."""
    read = read_prediction(logits, sweep.target)
    finite = read.pop("finite")
    ids = read["predicted_id"]
    predicted = np.full(len(ids), None, dtype=object)
    predicted[finite] = sweep.handle.decode_tokens(ids[finite].tolist())
    return pd.DataFrame({
        "model": sweep.handle.name, "layer": layer, "kind": sweep.handle.layer_kind(layer),
        "component": sweep.component, "level": [lv for lv, _ in runs], "trial": [key.trial for _, key in runs],
        "hit": ids == sweep.target, **read, "predicted": predicted, "finite": finite,
    })


def read_prediction(logits: torch.Tensor, target: int) -> dict[str, np.ndarray]:
    """p_target, logit_diff (target minus the best other token), predicted_id and finite from logits [N, V].

    A row with a NaN or infinite logit has finite=False and no prediction: p_target and
    logit_diff NaN, predicted_id `NO_PREDICTION` (the module docstring).
    """
    logits = logits.float()
    finite = torch.isfinite(logits).all(-1)
    predicted = logits.argmax(-1)
    top2 = logits.topk(2, dim=-1).values
    # the best other token is the runner-up when the target leads, else the leader (no [N, V] copy)
    best_other = torch.where(predicted == target, top2[:, 1], top2[:, 0])
    read = {"p_target": torch.softmax(logits, dim=-1)[:, target].numpy(),
            "logit_diff": (logits[:, target] - best_other).numpy(),
            "predicted_id": predicted.numpy(), "finite": finite.numpy()}
    if not finite.all():
        bad = ~read["finite"]
        read["p_target"][bad] = read["logit_diff"][bad] = np.nan
        read["predicted_id"][bad] = NO_PREDICTION
    return read


def to_frame(sweep, frames: list, layers_done: tuple[int, ...] | None = None) -> pd.DataFrame:
    """The sweep's rows with its parameters in ``attrs``; `layers_done` short of the sweep's
    layers marks a stopped sweep. Runs that overflowed are counted in ``attrs["overflowed"]``
    and warned about once."""
    layers_done = sweep.layers if layers_done is None else layers_done
    df = (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS))[list(COLUMNS)]
    overflowed = int((~df["finite"].astype(bool)).sum())
    df.attrs.update(target=sweep.target, distribution=sweep.distribution, scale=sweep.scale, draws=sweep.draws,
                    positions=sweep.positions, seed=sweep.seed, layers_done=tuple(layers_done),
                    stopped=len(layers_done) < len(sweep.layers), overflowed=overflowed)
    if overflowed:
        warn_overflow(overflowed, len(df), f"{sweep.handle.name}: noise on {sweep.component!r} "
                      f"(scale={sweep.scale!r}, levels up to {sweep.levels.max():g})")
    return df


def warn_overflow(overflowed: int, runs: int, what: str, stacklevel: int = 4) -> None:
    """The one warning of a call whose runs overflowed (see the module docstring)."""
    warnings.warn(f"{what}: {overflowed} of {runs} runs overflowed (logits NaN or infinite); they are kept as rows "
                  "with finite=False and no prediction, counted as misses (hit=False); attrs['overflowed'] "
                  "counts them", OverflowRunsWarning, stacklevel=stacklevel)
