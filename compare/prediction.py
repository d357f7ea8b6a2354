"""Reading a prediction: what the last position's logits say about the target, as rows of a frame.

The noise sweep, its reference twin and channel sensitivity read their runs' logits here, so
their rows have one format (`COLUMNS`). A `sweep` here is any object with the fields these read
(`handle`, `component`, `target`, `layers`, `distribution`, `scale`, `draws`, `positions`, `seed`;
`noise.Sweep` has them), so this module needs nothing of the analyses above it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

COLUMNS = ("model", "layer", "component", "level", "trial", "hit", "p_target", "logit_diff",
           "predicted_id", "predicted")


def rows(sweep, layer: int, runs: list, logits: torch.Tensor) -> pd.DataFrame:
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


def to_frame(sweep, frames: list, layers_done: tuple[int, ...] | None = None) -> pd.DataFrame:
    """The sweep's rows with its parameters in ``attrs``; `layers_done` short of the sweep's
    layers marks a stopped sweep."""
    layers_done = sweep.layers if layers_done is None else layers_done
    df = (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS))[list(COLUMNS)]
    df.attrs.update(target=sweep.target, distribution=sweep.distribution, scale=sweep.scale, draws=sweep.draws,
                    positions=sweep.positions, seed=sweep.seed, layers_done=tuple(layers_done),
                    stopped=len(layers_done) < len(sweep.layers))
    return df
