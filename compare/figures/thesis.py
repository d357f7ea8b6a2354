"""Figures of the thesis's views that `figures` and `noise_figures` lack: frames/arrays in, a Figure out.

    token_counts             tokens per text and tokenizer, the thesis's counts marked (Fig. 9, eq. 8/9)
    id_length_scatter        token length against log token ID: the vocabulary, a text's tokens on top (Fig. 10)
    variance_trend           variance of K per position with its least-squares line (Figs. 13–14)
    vocabulary_trajectories  K and P of every vocabulary entry over the positions (the density of their
                             curves), the tracked token highlighted (Figs. 15–17)
    id_logit_correlation     r(ID, L) and r(log ID, L) within each row of L, per position (Result 2)
    row_distances            d_L (between the models) against d_L_positions (between positions) (Conclusion 5)
    flattened_noisy          every position's row of L, concatenated, clean and noisy, per noised layer (Figs. 24–25)
    channel_effects          the channels whose noise alone most lowers P(target), n trials stated (§7.4)
    lens_heatmap             the logit lens's P(target) over layer × position, one panel per model

Pure functions (house rule 4): no model calls. Built as plain `Figure`s outside pyplot, and every text
drawn from data is literal (`figures.literal_text`, house rule 19).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, SymmetricalLogLocator

from .base import STYLE, literal_text, panels, position_ticks, suptitle, token_label

P_FLOOR = 1e-12  # P drawn on a log axis: float32 softmax underflows to 0 below about 1e-38


def token_counts(frame: pd.DataFrame) -> Figure:
    """Grouped bars: tokens of each text in each tokenizer; the thesis's count as a black tick.

    frame: columns text (label), model, n_tokens, thesis (the count the thesis gives; NaN: none).
    """
    texts, models = list(dict.fromkeys(frame["text"])), list(dict.fromkeys(frame["model"]))
    width = 0.8 / len(models)
    with sns.axes_style(STYLE):
        fig, ax = panels(1, 1, size=(max(5.0, 1.8 * len(texts)), 3.6), squeeze=True)
        for m, model in enumerate(models):
            data = frame[frame["model"] == model].set_index("text").reindex(texts)
            x = np.arange(len(texts)) + (m - (len(models) - 1) / 2) * width
            bars = ax.bar(x, data["n_tokens"], width, label=model)
            ax.bar_label(bars, fontsize=8)
        thesis = frame.groupby("text", sort=False)["thesis"].first().reindex(texts)
        shown = thesis.notna().to_numpy()
        ax.scatter(np.arange(len(texts))[shown], thesis[shown], marker="_", s=600, color="k", zorder=3,
                   label="thesis")
        ax.set_xticks(np.arange(len(texts)), texts)
        ax.set(ylabel="tokens")
        ax.legend(fontsize="small")
        suptitle(fig, "Tokens per text and tokenizer")
    return literal_text(fig)


def id_length_scatter(vocab: Mapping[str, pd.DataFrame], text: Mapping[str, pd.DataFrame],
                      highlight: str | None = None, *, quantile: float = 0.999) -> Figure:
    """Length against 1 + ID (log axis), one panel per model: the vocabulary grey, a text's tokens on top.

    vocab, text: model → columns id, token, length (`metrics.token_lengths`); highlight: a token
    text (" Mary") drawn in red and named with its ID. The y axis stops at the `quantile` of the
    lengths (a few whitespace tokens hundreds of characters long would squash the rest); the panel
    says how many tokens lie above it.
    """
    from matplotlib.lines import Line2D

    top = max(float(np.quantile(np.concatenate([v["length"].to_numpy() for v in vocab.values()]), quantile)),
              *(float(t["length"].max()) for t in text.values() if len(t)), 1.0) * 1.05
    with sns.axes_style(STYLE):
        fig, axes = panels(1, len(vocab), sharey=True)
        for ax, name in zip(axes[0], vocab):
            v, t = vocab[name], text[name]
            ax.scatter(v["id"] + 1, v["length"], s=2, alpha=0.15, color="0.5", lw=0, rasterized=True)
            ax.scatter(t["id"] + 1, t["length"], s=18, color="C0", zorder=3)
            handles = [Line2D([], [], ls="", marker="o", ms=5, color="0.5", label=f"vocabulary ({len(v):,})"),
                       Line2D([], [], ls="", marker="o", ms=5, color="C0", label="text tokens")]
            if highlight is not None:
                hit = t[t["token"] == highlight].drop_duplicates("id")
                for _, r in hit.iterrows():
                    ax.scatter(r["id"] + 1, r["length"], s=60, color="C3", zorder=4)
                    ax.annotate(f"{token_label(r['token'])} = {r['id']}", (r["id"] + 1, r["length"]),
                                xytext=(5, 5), textcoords="offset points", color="C3", fontsize=8)
            above = int((v["length"] > top).sum())
            if above:
                ax.text(0.99, 0.98, f"{above} token{'s' if above != 1 else ''} longer than {top:.0f} characters "
                        "above the axis", transform=ax.transAxes, ha="right", va="top", fontsize=7)
            ax.set_xscale("log")
            ax.set_ylim(0, top)
            ax.set(title=name, xlabel="1 + token ID (log)", ylabel="token length (characters)")
            ax.legend(handles=handles, fontsize="x-small", loc="upper left")
        suptitle(fig, "Token length against token ID")
    return literal_text(fig)


def variance_trend(frame: pd.DataFrame, trends: Mapping[str, Mapping[str, float]]) -> Figure:
    """Variance of K per position, one panel per model (linear axes, each its own scale), each with its
    least-squares line; the legend gives slope, r, n and the slope's t-test p-value.

    frame: columns model, position, variance; trends: model → slope, intercept, r (`metrics.variance_trend`).
    """
    from scipy import stats

    groups = list(frame.groupby("model", sort=False))
    with sns.axes_style(STYLE):
        fig, axes = panels(1, len(groups), size=(5.0, 3.4))
        for i, (ax, (name, g)) in enumerate(zip(axes[0], groups)):
            tr = trends[name]
            t, v = g["position"].to_numpy(float), g["variance"].to_numpy(float)
            p = stats.linregress(t, v).pvalue if len(t) > 2 and np.ptp(t) > 0 and np.ptp(v) > 0 else float("nan")
            ax.plot(t, v, marker="o", ms=4, color=f"C{i}", label="variance of K")
            ax.plot(t, tr["intercept"] + tr["slope"] * t, ls="--", color="k",
                    label=f"least squares: slope {tr['slope']:.3g}, r {tr['r']:.2f}, n {len(t)}, p {p:.2g}")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set(title=name, xlabel="position T", ylabel="variance of K")
            ax.legend(fontsize="x-small")
        suptitle(fig, "Variance of the K distribution per position")
    return literal_text(fig)


def vocabulary_trajectories(K: Mapping[str, np.ndarray], P: Mapping[str, np.ndarray], tracked: Mapping[str, int],
                            tokens: Mapping[str, Sequence[str]], *, label: str = "") -> Figure:
    """K (top row) and P (bottom row) of every vocabulary entry over the positions, one column per model.

    K, P: model → [T, V]; tracked: model → the ID drawn in red; tokens: model → the T input tokens.
    The thesis drew one faint curve per entry; 50k overlapping curves are drawn here as what they
    add up to, the density of the curves (`curve_density`: grey, log scale), which renders in a
    second instead of half a minute. K's axis is symlog.
    """
    with sns.axes_style("white"):
        fig, axes = panels(2, len(K), size=(6.0, 3.0))
        for col, name in enumerate(K):
            for row, (quantity, X) in enumerate((("K", K[name]), ("P", P[name]))):
                ax = axes[row][col]
                X = np.asarray(X, dtype=np.float64)
                if quantity == "K":
                    ax.set_yscale("symlog", linthresh=1.0)
                    ax.yaxis.set_major_locator(SymmetricalLogLocator(linthresh=1.0, base=100))
                    ax.set_title(name)
                    ax.tick_params(labelbottom=False)
                else:  # a log axis: a tracked P of 1e-5 on a linear 0 … 0.1 axis is a flat line on 0
                    X = np.maximum(X, P_FLOOR)
                    ax.set_yscale("log")
                curve_density(ax, X)
                ax.plot(np.arange(len(X)), X[:, tracked[name]], color="C3", lw=1.8, marker="o", ms=3,
                        label=f"{token_label(label or tokens[name][0])} (ID {tracked[name]})")
                if quantity == "P":
                    position_ticks(ax, tokens[name])
                ax.set_ylabel(quantity if quantity == "K" else f"P (log, floor {P_FLOOR:g})")
                ax.legend(fontsize="x-small", loc="upper left")
        suptitle(fig, "Every vocabulary entry over the positions (K above, P below): density of the curves, "
                      "the tracked token in red")
    return literal_text(fig)


def curve_density(ax, X: np.ndarray, *, samples: int = 12, y_bins: int = 240) -> None:
    """Draw the V curves t ↦ X[t, v] (X: [T, V]) as their density on `ax`, in the axis's own y scale.

    Each segment between two positions is sampled `samples` times (linearly, in the scale's
    coordinates, as a line drawn there would be); each sample column is a histogram of the V
    curves over `y_bins` even bins of the transformed axis, shown grey on a log colour scale.
    """
    from matplotlib.colors import LogNorm

    T = len(X)
    to_axis = ax.yaxis.get_transform()
    Y = to_axis.transform(X.reshape(-1, 1)).reshape(X.shape)
    low, high = float(Y.min()), float(Y.max())
    high = high if high > low else low + 1.0
    edges = np.linspace(low, high, y_bins + 1)
    s = np.linspace(0.0, 1.0, samples, endpoint=False)
    columns, x = [], []
    for t in range(T):
        for fraction in (s if t < T - 1 else [0.0]):
            y = Y[t] if fraction == 0 else (1 - fraction) * Y[t] + fraction * Y[t + 1]
            columns.append(np.histogram(y, bins=edges)[0])
            x.append(t + fraction)
    counts = np.array(columns, dtype=np.float64).T  # [y_bins, columns]
    x = np.array(x)
    x_edges = np.concatenate([[x[0] - 0.5 / samples], (x[1:] + x[:-1]) / 2, [x[-1] + 0.5 / samples]])
    y_edges = to_axis.inverted().transform(edges.reshape(-1, 1)).ravel()
    counts[counts == 0] = np.nan
    ax.pcolormesh(x_edges, y_edges, counts, cmap="Greys", norm=LogNorm(vmin=1, vmax=max(2.0, np.nanmax(counts))),
                  shading="flat", rasterized=True)
    ax.set_xlim(x_edges[0], x_edges[-1])
    ax.set_ylim(y_edges[0], y_edges[-1])


def id_logit_correlation(frame: pd.DataFrame) -> Figure:
    """r(ID, L) and r(log(1 + ID), L) of each row of L against the position, one line per model.

    frame: columns model, position, r_id_L, r_logid_L (`Comparison.to_frame`).
    """
    with sns.axes_style(STYLE):
        fig, axes = panels(1, 2, sharey=True, size=(4.5, 3.4))
        for ax, column, title in zip(axes[0], ("r_id_L", "r_logid_L"), ("r(ID, L)", "r(log(1 + ID), L)")):
            for name, g in frame.groupby("model", sort=False):
                ax.plot(g["position"], g[column], marker="o", ms=4, label=name)
            ax.axhline(0, color="k", lw=0.8)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set(title=title, xlabel="position T", ylim=(-1, 1))
        axes[0][0].set_ylabel("Pearson r within the row of L")
        axes[0][0].legend(fontsize="small")
        suptitle(fig, "Within a row of L: correlation of the logit with the token ID")
    return literal_text(fig)


def row_distances(cross: pd.DataFrame) -> Figure:
    """Per paired position: d_L (the two models' rows) beside d_L_positions / other_d_L_positions
    (each model's row to its own other rows); frame as `Comparison.cross`."""
    with sns.axes_style(STYLE):
        fig, ax = panels(1, 1, size=(7.0, 3.6), squeeze=True)
        model, other = cross["model"].iloc[0], cross["other"].iloc[0]
        x = np.arange(len(cross))
        for i, (column, label) in enumerate((("d_L", f"d_L: {model} vs {other}"),
                                             ("d_L_positions", f"d_L_positions: {model}, between positions"),
                                             ("other_d_L_positions", f"other_d_L_positions: {other}, between positions"))):
            ax.bar(x + (i - 1) * 0.27, cross[column], 0.27, label=label)
        position_ticks(ax, list(cross["token"]), positions=cross["position"].to_numpy(), at=x)
        ax.set(ylabel="RMS distance of L (shared tokens)")
        ax.legend(fontsize="x-small")
        suptitle(fig, "Rows of L: between the models vs between positions")
    return literal_text(fig)


def flattened_noisy(clean: Mapping[str, np.ndarray], noisy: Mapping[tuple[str, int], np.ndarray]) -> Figure:
    """Every position's row of L concatenated into one vector, clean (blue) and noisy (orange):
    one panel per (model, noised layer).

    clean: model → L [T, V]; noisy: (model, layer) → L [T, V] with noise at that layer.
    """
    with sns.axes_style("white"):
        fig, axes = panels(len(noisy), 1, size=(11.0, 2.4))
        for ax, ((name, layer), L_noisy) in zip(axes[:, 0], noisy.items()):
            L_clean = np.asarray(clean[name])
            T, V = L_clean.shape
            x = np.arange(T * V)
            # noisy first, clean on top (thinner): the clean trace stays visible where the noisy one spreads
            ax.plot(x, np.asarray(L_noisy).ravel(), lw=0.4, color="C1", alpha=0.6, label="noisy", rasterized=True)
            ax.plot(x, L_clean.ravel(), lw=0.25, color="C0", alpha=0.9, label="clean", rasterized=True)
            ax.set_xticks([(t + 0.5) * V for t in range(T)], [str(t) for t in range(T)], fontsize=7)
            ax.set_xlim(0, T * V)
            ax.set(title=f"{name}: noise at layer {layer}", ylabel="L")
            legend = ax.legend(fontsize="x-small", loc="upper right")
            for line in legend.get_lines():
                line.set_linewidth(2.0)
                line.set_alpha(1.0)
        axes[-1][0].set_xlabel("position (each block: the whole vocabulary)")
        suptitle(fig, "Flattened L, all positions: clean and with noise at one layer")
    return literal_text(fig)


def channel_effects(ranking: pd.DataFrame, *, top: int = 15, p_clean: float, trials: int) -> Figure:
    """The `top` channels of each axis by `effect` (P(target) clean minus its mean with noise on the
    channel alone), horizontal bars, one panel per axis; n trials and the clean P in the title.

    ranking: columns axis, channel, effect (sorted, largest first, per axis).
    """
    axes_names = list(dict.fromkeys(ranking["axis"]))
    with sns.axes_style(STYLE):
        fig, axes = panels(1, len(axes_names), size=(4.6, 0.25 * top + 1.2))
        for ax, axis in zip(axes[0], axes_names):
            g = ranking[ranking["axis"] == axis].head(top)
            y = np.arange(len(g))[::-1]
            ax.barh(y, g["effect"], color="C0")
            ax.set_yticks(y, [f"{axis} {c}" for c in g["channel"]], fontsize=7)
            ax.axvline(0, color="k", lw=0.8)
            ax.set(title=f"{axis} ({(ranking['axis'] == axis).sum():,} in all)",
                   xlabel="fall of P(target): clean − mean noisy")
        suptitle(fig, f"Channels whose noise alone most lowers P(target) (clean P = {p_clean:.3g}; "
                      f"{trials} trial{'s' if trials != 1 else ''} per channel)")
    return literal_text(fig)


def lens_heatmap(lens: pd.DataFrame, tokens: Mapping[str, Sequence[str]]) -> Figure:
    """P(target) under the logit lens over layer (rows) × position (columns), one panel per model,
    on one colour scale 0 … 1; the positions labelled with their tokens.

    lens: `compare.logit_lens` rows (model, layer, position, target, target_prob); tokens: model → its tokens.
    """
    names = list(dict.fromkeys(lens["model"]))
    with sns.axes_style("white"):
        fig, axes = panels(len(names), 1, size=(9.0, 2.6))
        for ax, name in zip(axes[:, 0], names):
            g = lens[lens["model"] == name]
            grid = g.pivot(index="layer", columns="position", values="target_prob").sort_index()
            mesh = ax.pcolormesh(np.arange(grid.shape[1] + 1) - 0.5, np.arange(grid.shape[0] + 1) - 0.5,
                                 grid.to_numpy(float), cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_yticks(np.arange(grid.shape[0]), [str(layer) for layer in grid.index])
            position_ticks(ax, [tokens[name][t] for t in grid.columns], positions=grid.columns.to_numpy(),
                           at=np.arange(grid.shape[1]))
            ax.set(title=f"{name}: P({token_label(str(g['target'].iloc[0]))}) per layer", ylabel="layer")
            fig.colorbar(mesh, ax=ax, label="P(target)")
        axes[-1][0].set_xlabel("position")
        suptitle(fig, "Logit lens: each layer's residual decoded by the model's own head")
    return literal_text(fig)
