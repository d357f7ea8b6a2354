"""Figures: data in (arrays, DataFrames), a matplotlib Figure out; one panel per model, side by side.

No function here loads a model or computes a forward pass; `Comparison.figures` feeds them.
Figures are built as plain `matplotlib.figure.Figure`s, outside pyplot: no backend is touched and
nothing stays registered, so there is no global figure list to close (gr.Plot and savefig take them).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from . import metrics

STYLE = "whitegrid"
PANEL = (5.5, 4.0)  # inches per model panel


def panels(n_rows: int, n_cols: int, *, sharey=False, size=PANEL, squeeze=False):
    """A constrained-layout Figure of n_rows × n_cols axes, `size` inches each (axes 2-D unless squeeze)."""
    fig = Figure(figsize=(size[0] * n_cols, size[1] * n_rows), layout="constrained")
    return fig, fig.subplots(n_rows, n_cols, sharey=sharey, squeeze=squeeze)


def k_distributions(k: Mapping[str, np.ndarray], tokens: Mapping[str, Sequence[str]], *,
                    bins: int = 80) -> Figure:
    """Ridgeline of each position's K histogram (log counts, so a small tail bump stays visible).

    k: model → K [T, V]; tokens: model → the T input tokens, used as row labels.
    """
    with sns.axes_style(STYLE):
        height = max(PANEL[1], 0.45 * max(len(v) for v in k.values()))
        fig, axes = panels(1, len(k), size=(PANEL[0], height))
        for ax, (name, K) in zip(axes[0], k.items()):
            K = np.asarray(K, dtype=np.float64)
            edges = np.linspace(K.min(), K.max(), bins + 1)
            centres = (edges[:-1] + edges[1:]) / 2
            colours = sns.color_palette("viridis", len(K))
            for t, row in enumerate(K):
                counts = np.log1p(np.histogram(row, bins=edges)[0])
                curve = 0.9 * counts / counts.max() if counts.max() > 0 else counts
                ax.fill_between(centres, -t, -t + curve, color=colours[t], alpha=0.6, lw=0.6, ec="k")
            ax.set_yticks(-np.arange(len(K)) + 0.3)
            ax.set_yticklabels([f"{t}: {tok!r}" for t, tok in enumerate(tokens[name])], fontsize=7)
            ax.set_xlabel("K = L / |mean(L)|")
            ax.set_title(name)
        axes[0][0].set_ylabel("position: input token")
        fig.suptitle("Distribution of normalised logits K per position (log counts)")
    return fig


def trajectories(frame: pd.DataFrame) -> Figure:
    """L, K and P of each tracked token over the positions; rows L/K/P, one column per model.

    frame: columns model, tracked, position, L, K, P (as `Comparison.tracked_frame`).
    """
    models = list(dict.fromkeys(frame["model"]))
    with sns.axes_style(STYLE):
        fig, axes = panels(3, len(models), size=(PANEL[0], PANEL[1] * 0.7))
        for col, name in enumerate(models):
            data = frame[frame["model"] == name]
            for row, quantity in enumerate(("L", "K", "P")):
                ax = axes[row][col]
                sns.lineplot(data=data, x="position", y=quantity, hue="tracked", marker="o", ax=ax)
                ax.set_ylabel(quantity)
                ax.set_title(f"{name}: {quantity}" if row == 0 else quantity)
                if row < 2:
                    ax.set_xlabel("")
        fig.suptitle("Tracked tokens over positions: logit L, normalised logit K, probability P")
    return fig


def flattened_logits(logits: Mapping[str, np.ndarray]) -> Figure:
    """Every position's L row concatenated into one vector per model; shaded blocks = positions."""
    with sns.axes_style("white"):
        fig, axes = panels(len(logits), 1, size=(11.0, 2.8))
        for ax, (name, L) in zip(axes[:, 0], logits.items()):
            L = np.asarray(L)
            T, V = L.shape
            ax.plot(np.arange(T * V), L.ravel(), lw=0.3, color="C0", rasterized=True)
            for t in range(0, T, 2):
                ax.axvspan(t * V, (t + 1) * V, color="0.92", zorder=0)
            step = max(1, T // 20)
            ax.set_xticks([(t + 0.5) * V for t in range(0, T, step)], [str(t) for t in range(0, T, step)])
            ax.set_xlim(0, T * V)
            ax.set_xlabel("position (each block: the whole vocabulary)")
            ax.set_ylabel("L")
            ax.set_title(name)
        fig.suptitle("Flattened logit vector: all positions concatenated")
    return fig


def tokenizer_scatter(tables: Mapping[str, pd.DataFrame]) -> Figure:
    """Token ID against decoded length, with Pearson r (linear and log ID) in each title.

    tables: model → DataFrame with columns id, length (as `metrics.token_lengths`).
    """
    with sns.axes_style(STYLE):
        fig, axes = panels(1, len(tables), sharey=True)
        for ax, (name, table) in zip(axes[0], tables.items()):
            r = metrics.length_correlations(table)
            sns.scatterplot(data=table, x="id", y="length", s=4, alpha=0.3, linewidth=0, ax=ax, rasterized=True)
            ax.set_title(f"{name}: r = {r['r_id_len']:.3f}, r(log id) = {r['r_logid_len']:.3f}")
            ax.set_xlabel("token ID")
            ax.set_ylabel("decoded length (characters)")
        fig.suptitle("Tokenizer: token ID vs token length")
    return fig


def top_k_table(frame: pd.DataFrame) -> Figure:
    """Per position, the k most probable next tokens with P, as a table per model.

    frame: columns model, position, token, rank, candidate, p (as `Comparison.top_k_frame`).
    """
    models = list(dict.fromkeys(frame["model"]))
    k = int(frame["rank"].max())
    n_rows = frame.groupby("model")["position"].nunique().max()
    fig, axes = panels(1, len(models), size=(1.6 * (k + 1), 0.3 * n_rows + 1.0))
    for ax, name in zip(axes[0], models):
        data = frame[frame["model"] == name].sort_values(["position", "rank"])
        cells = [[f"{c!r} {p:.2f}" for c, p in zip(g["candidate"], g["p"])]
                 for _, g in data.groupby("position", sort=True)]
        inputs = [f"{t}: {tok!r}" for t, tok in data.groupby("position", sort=True)["token"].first().items()]
        ax.axis("off")
        table = ax.table(cellText=cells, rowLabels=inputs, colLabels=[f"top {r}" for r in range(1, k + 1)],
                         loc="upper center", cellLoc="left")
        table.auto_set_font_size(False)
        table.set_fontsize(7)
        ax.set_title(name)
    fig.suptitle(f"Top-{k} next-token predictions per position (token, P)")
    return fig


def cross_model(frame: pd.DataFrame) -> Figure:
    """JS divergence per paired position, with agreeing positions marked; one panel per pair.

    frame: as `Comparison.cross` (model, other, position, js, agree, split).
    """
    pairs = list(dict.fromkeys(zip(frame["model"], frame["other"])))
    with sns.axes_style(STYLE):
        fig, axes = panels(1, len(pairs), sharey=True)
        for ax, (a, b) in zip(axes[0], pairs):
            data = frame[(frame["model"] == a) & (frame["other"] == b)]
            ax.plot(data["position"], data["js"], marker="o", color="C0", label="JS (bits)")
            agree = data[data["agree"]]
            ax.scatter(agree["position"], agree["js"], s=80, facecolors="none", edgecolors="C2",
                       label="same top-1 prediction", zorder=3)
            split = data[data["split"]]
            ax.scatter(split["position"], split["js"], marker="x", color="C3", label="split token", zorder=3)
            ax.set_ylim(0, 1)
            ax.set_xlabel(f"position ({a})")
            ax.set_ylabel("Jensen–Shannon divergence (bits)")
            ax.set_title(f"{a} vs {b}: agreement {data['agree'].mean():.0%}")
            ax.legend(fontsize=8)
        fig.suptitle("Cross-model divergence over shared tokens")
    return fig
