"""Figures of the logit lens: a `compare.logit_lens` frame in, a matplotlib Figure out, one
layer × position heatmap per model side by side (`figures.panels`).

Layers are on the y axis (0 at the bottom, as the residual stream rises), positions on the x
axis labelled with each model's input tokens. `lens_heatmap(frame, value=...)` draws one
quantity of the frame:
    "top"          P of the lens's top-1 token, each cell annotated with that token
    "target_prob"  P(target) under the lens; without a target the frame's target is the
                   model's own top-1 token at each position (when does a layer find the
                   answer the model gives)
    "kl"           KL(final ‖ layer), nats
    "entropy"      entropy of the lens's distribution, nats
Tokens are data (house rule 19): annotations and tick labels are drawn literally
(`figures.literal_text`), so "$", "_" or "\\" show as typed.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .base import literal_text, panels, require_columns, suptitle, token_label

VALUES = ("top", "target_prob", "kl", "entropy")
READ = ("model", "layer", "position", "token", "top_tokens", "top_probs")  # the columns every heatmap reads
MAX_ANNOTATED = 800
"""Cells annotated with their top token at most, per panel; a larger grid is drawn unannotated."""
ANNOTATION_CHARS = 8
"""Characters of a token shown in a cell; a longer one is cut with '…'."""


def lens_heatmap(frame: pd.DataFrame, *, value: str = "top") -> Figure:
    """`value` (one of `VALUES`) of a logit-lens frame over layer × position, one panel per model."""
    if value not in VALUES:
        raise ValueError(f"value must be one of {', '.join(VALUES)}, got {value!r}")
    read = READ + {"top": (), "target_prob": ("target_prob", "target")}.get(value, (value,))
    require_columns(frame, "lens_heatmap", read, "a logit_lens frame")
    models = list(dict.fromkeys(frame["model"]))
    if not models:
        raise ValueError("no rows to draw: the frame is empty")
    fig, (axes,) = panels(1, len(models), size=(5.6, 4.4))
    for ax, model in zip(axes, models):
        g = frame[frame["model"] == model]
        layers = sorted(g["layer"].unique())
        positions = sorted(g["position"].unique())
        cells = g.set_index(["layer", "position"])
        grid = np.full((len(layers), len(positions)), np.nan)
        words = np.full(grid.shape, "", dtype=object)
        for i, layer in enumerate(layers):
            for j, position in enumerate(positions):
                row = cells.loc[(layer, position)]
                grid[i, j] = row["top_probs"][0] if value == "top" else row[value]
                words[i, j] = row["top_tokens"][0]
        probability = value in ("top", "target_prob")
        top = 1.0 if probability else max(np.nanmax(grid), 1e-12)
        image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis", vmin=0.0, vmax=top)
        if value == "top" and grid.size <= MAX_ANNOTATED:
            _annotate(ax, grid, words, top)
        tokens = g.drop_duplicates("position").set_index("position")["token"]
        ax.set_xticks(range(len(positions)), [token_label(tokens[p]) for p in positions], rotation=90,
                      fontsize="x-small")
        ax.set_yticks(range(len(layers)), [str(layer) for layer in layers], fontsize="x-small")
        ax.set(title=f"{model}: {_panel_title(g, value)}", xlabel="position", ylabel="layer")
        fig.colorbar(image, ax=ax, shrink=0.8, label=_colour_label(value))
    suptitle(fig, f"{frame.attrs.get('lens', 'logit')} lens: {_title(value)}")
    return literal_text(fig)


def _annotate(ax, grid: np.ndarray, words: np.ndarray, top: float) -> None:
    small = "xx-small" if grid.shape[1] > 12 else "x-small"
    for (i, j), word in np.ndenumerate(words):
        text = word if len(word) <= ANNOTATION_CHARS else word[:ANNOTATION_CHARS - 1] + "…"
        dark = not np.isfinite(grid[i, j]) or grid[i, j] < 0.6 * top  # viridis is dark at its low end
        ax.text(j, i, token_label(text), ha="center", va="center", fontsize=small,
                color="white" if dark else "black")


def _panel_title(g: pd.DataFrame, value: str) -> str:
    if value != "target_prob":
        return _title(value)
    targets = g["target"].unique()
    return f"P({token_label(targets[0])})" if len(targets) == 1 else "P(the model's own top-1 at each position)"


def _title(value: str) -> str:
    return {"top": "top-1 token and its P", "target_prob": "P(target)", "kl": "KL(final ‖ layer)",
            "entropy": "entropy"}[value]


def _colour_label(value: str) -> str:
    return {"top": "P(top-1)", "target_prob": "P(target)", "kl": "KL, nats", "entropy": "entropy, nats"}[value]
