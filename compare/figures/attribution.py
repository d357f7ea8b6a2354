"""Figures of attribution patching: the estimates of `attribution_patch` against the exact
effects of `patch_sweep` on the same pair, a frame of each in, a matplotlib Figure out, one
panel per model side by side (`figures.panels`).

Each point is one (layer, patch): x the exact change m_patched − m_corrupt, y the estimate,
coloured by layer (so a layer where the first-order estimate fails stands out), with the
identity line. The panel's title gives Pearson's r over its points and how many there are,
the cells that both leave at 0 (positions before the first changed token) included.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .base import literal_text, panels, require_columns, suptitle


def attribution_scatter(estimates: pd.DataFrame, exact: pd.DataFrame) -> Figure:
    """Estimate against exact change per (layer, patch) of the component `exact` swept, one panel
    per model of `exact` (estimates: an `attribution_patch` frame holding that component)."""
    require_columns(estimates, "estimates", ("model", "layer", "position", "component", "estimate"),
                    "an attribution_patch frame")
    require_columns(exact, "exact", ("model", "layer", "position", "component", "metric_patched"), "a patch_sweep frame")
    models = list(dict.fromkeys(exact["model"]))
    if not models:
        raise ValueError("exact: no rows to draw; the patch_sweep frame is empty")
    component = exact["component"].iloc[0]
    fig, (axes,) = panels(1, len(models), size=(5.0, 4.2))
    for ax, model in zip(axes, models):
        change, estimate, layers = pair_up(estimates, exact, model)
        points = ax.scatter(change, estimate, c=layers, cmap="viridis", s=12)
        fig.colorbar(points, ax=ax, label="layer")
        both = np.concatenate([change, estimate])
        lim = [float(both.min()), float(both.max())] if both.size else [0.0, 1.0]
        ax.plot(lim, lim, lw=0.6, color="grey", label="estimate = exact")
        r = np.corrcoef(change, estimate)[0, 1] if len(change) > 1 and change.std() and estimate.std() else np.nan
        ax.set(title=f"{model} {component}: r = {r:.3f}, n = {len(change)}", xlabel="exact m_patched − m_corrupt",
               ylabel="attribution estimate")
        ax.legend(loc="upper left", fontsize="x-small")
    steps = estimates.attrs.get("steps", 1)
    suptitle(fig, f"{component}: attribution vs exact patching" + (f", path of {steps} steps" if steps > 1 else ""))
    return literal_text(fig)


def pair_up(estimates: pd.DataFrame, exact: pd.DataFrame, model: str):
    """(exact change, estimate, layer) arrays over the (layer, patch) cells of `model` in `exact`."""
    mine = exact[exact["model"] == model]
    component = mine["component"].iloc[0]
    est = estimates[(estimates["model"] == model) & (estimates["component"] == component)]
    if est.empty:
        raise ValueError(f"estimates: no rows of {model}'s {component!r}; run attribution_patch with that component")
    est = est.set_index(["layer", "position"])["estimate"]
    cells = list(zip(mine["layer"], mine["position"]))
    missing = [c for c in cells if c not in est.index]
    if missing:
        raise ValueError(f"estimates: no estimate of {model}'s {component!r} at (layer, position) {missing[0]}")
    change = mine["metric_patched"].to_numpy() - exact.attrs["m_corrupt"][model]
    return change, est.loc[cells].to_numpy(), mine["layer"].to_numpy()
