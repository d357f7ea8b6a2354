"""Figures of the noise experiments: frames in, matplotlib `Figure` out, no model calls.

    hit_curves          hit rate and p_target vs level per layer, with the logistic fit and c
    hit_heatmap         layer × level hit rate, one panel per model
    critical_levels     critical level vs layer, one line per (model, component), bootstrap CI
    noisy_logits        last-position logits over the vocabulary, clean vs noisy, at the
                        layers given (an early vs a late one)
    channel_bars        the most sensitive channels of `channels.channel_sensitivity`

Figures are built with `matplotlib.figure.Figure`, not pyplot, so no global state is touched
and Gradio's `gr.Plot` can take them as they are. Model and component names are data, drawn
literally (`figures.literal_text`, house rule 19).

Runs that overflowed (finite=False: no prediction, see `prediction`) count as misses in every
hit rate, and each figure says how many there were (`overflow_note`); p_target means are over
the runs that did not overflow. A figure with nothing to draw says why on its axes.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .base import literal_text, panels, suptitle
from ..measures.phase import SPREAD_10_90

MAX_LAYER_TICKS = 25  # more layers than this: every k-th layer is labelled


def hit_curves(df: pd.DataFrame, fits: pd.DataFrame | None = None, *, layers=None, max_panels: int = 6) -> Figure:
    """One panel per layer: hit rate (dots) and mean p_target (line) against the noise level.

    layers: the layers to show, in that order (each must be in `df`); default up to `max_panels`
        spread over the sweep's layers.
    fits: as `phase.phase_transition`; a fitted group adds its logistic curve (dashed), its
        critical level (dotted vertical line) and, where ci_low/ci_high are finite, the CI as a band.
    A panel whose runs overflowed says how many, counted as misses; the p_target line is the
    mean over the runs that did not.
    """
    available = sorted(pd.unique(df["layer"]).tolist())
    if layers is None:
        picks = np.unique(np.linspace(0, len(available) - 1, min(max_panels, len(available))).round().astype(int))
        layers = [available[i] for i in picks]
    else:
        layers = list(layers)
        missing = [layer for layer in layers if layer not in available]
        if missing or not layers:
            raise ValueError(f"layers: {missing or 'none given'} not in the sweep; choose from {available}")
    fig, (axes,) = panels(1, len(layers), sharey=True, size=(3.2, 3.0))
    legend, fitted = {}, False
    for ax, layer in zip(axes, layers):
        sub = df[df["layer"] == layer]
        for (model, component), g in sub.groupby(["model", "component"]):
            mean = g.groupby("level")[["hit", "p_target"]].mean()
            line, = ax.plot(mean.index, mean["p_target"], lw=1)
            dots = ax.scatter(mean.index, mean["hit"], s=8, color=line.get_color())
            legend.setdefault(f"{model} {component} p_target", line)
            legend.setdefault(f"{model} {component} hit rate", dots)
            fit = _fit_row(fits, model, layer, component)
            if fit is not None and fit["status"] == "fit":
                fitted = True
                level = np.linspace(0, mean.index.max(), 200)
                w = fit["width"] / SPREAD_10_90
                ax.plot(level, 1 / (1 + np.exp((level - fit["critical_level"]) / w)), ls="--",
                        color=line.get_color())
                ax.axvline(fit["critical_level"], ls=":", color=line.get_color())
                if np.isfinite(fit.get("ci_low", np.nan)) and np.isfinite(fit.get("ci_high", np.nan)):
                    ax.axvspan(fit["ci_low"], fit["ci_high"], color=line.get_color(), alpha=0.15, lw=0)
        ax.set(title=f"layer {layer}", xlabel="noise level", ylim=(-0.05, 1.05))
        note = overflow_note(sub)
        if note:
            ax.text(0.98, 0.98, note, transform=ax.transAxes, ha="right", va="top", fontsize="x-small", wrap=True)
    axes[0].set_ylabel("hit rate / p(target)")
    if fitted:
        legend["logistic fit"] = Line2D([], [], ls="--", color="0.3")
        legend["critical level (band: CI)"] = Line2D([], [], ls=":", color="0.3")
    # one legend under all panels, handles passed explicitly (a name "_x" is not a hidden label)
    fig.legend(list(legend.values()), list(legend), loc="outside lower center", fontsize="x-small",
               ncols=min(4, max(1, len(legend))))
    return literal_text(fig)


def hit_heatmap(df: pd.DataFrame) -> Figure:
    """Hit rate over layer × level, one panel per model (mean over trials and components).

    The layer axis is labelled at the swept layers only (integers; every k-th beyond
    `MAX_LAYER_TICKS`); runs that overflowed are misses, and the title says how many.
    """
    models = list(dict.fromkeys(df["model"]))
    fig, (axes,) = panels(1, len(models), size=(5, 3.6))
    for ax, model in zip(axes, models):
        grid = df[df["model"] == model].pivot_table(index="layer", columns="level", values="hit", aggfunc="mean")
        mesh = ax.pcolormesh(_edges(grid.columns.to_numpy(float)), _edges(grid.index.to_numpy(float)),
                             grid.to_numpy(float), vmin=0, vmax=1, cmap="viridis")
        layers = grid.index.tolist()
        ticks = layers[::-(-len(layers) // MAX_LAYER_TICKS)]
        ax.set_yticks(ticks, [str(layer) for layer in ticks])
        ax.set(title=model, xlabel="noise level", ylabel="layer")
    fig.colorbar(mesh, ax=list(axes), label="hit rate")
    note = overflow_note(df)
    if note:
        suptitle(fig, note)
    return literal_text(fig)


def critical_levels(fits: pd.DataFrame) -> Figure:
    """Critical level vs layer, one line per (model, component); groups without a fit are left out.

    When no group has a fit the axes say so, with how the layers fared and the swept range
    (``fits.attrs["level_range"]``, which `phase.phase_transition` sets): "no layer crossed:
    3 always hit in [0 … 1]". Runs that overflowed (the `overflowed` column) are counted in the
    title: the fits took them as misses.
    """
    fig, ax = panels(1, 1, size=(6, 3.6), squeeze=True)
    for (model, component), g in fits[fits["status"] == "fit"].groupby(["model", "component"]):
        g = g.sort_values("layer")
        err = np.vstack([g["critical_level"] - g["ci_low"], g["ci_high"] - g["critical_level"]])
        ax.errorbar(g["layer"], g["critical_level"], yerr=np.nan_to_num(err), marker="o", ms=3,
                    capsize=2, label=f"{model} {component}")
    ax.set(xlabel="layer", ylabel="critical noise level")
    if ax.containers:  # every layer may have gone without a fit (never flipped)
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, _no_crossing(fits), transform=ax.transAxes, ha="center", va="center", wrap=True)
    if "overflowed" in fits.columns and fits["overflowed"].sum() > 0:
        suptitle(fig, f"{int(fits['overflowed'].sum())} of {int(fits['n'].sum())} runs overflowed "
                      "(no prediction), fitted as misses")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are integers
    return literal_text(fig)


def noisy_logits(df: pd.DataFrame, *, target: int | None = None) -> Figure:
    """Logit vs token ID, clean and noisy, one panel per layer; `df` from `noise.noisy_logits`.

    The last position's row of L only; the flattened L of every position is `figures.flattened_logits`.
    """
    layers = sorted(df["layer"].unique())
    fig, (axes,) = panels(1, len(layers), sharey=True, size=(5, 3.2))
    for ax, layer in zip(axes, layers):
        for run, g in df[df["layer"] == layer].groupby("run", sort=True):
            ax.plot(g["token_id"], g["logit"], lw=0.4, alpha=0.8, label=run)
        if target is not None:
            ax.axvline(target, color="k", ls=":", lw=0.8, label="target")
        ax.set(title=f"noise at layer {layer}", xlabel="token ID")
    axes[0].set_ylabel("logit (last position)")
    axes[-1].legend(fontsize="small")
    return literal_text(fig)


def channel_bars(df: pd.DataFrame, *, top: int = 20) -> Figure:
    """Flip rate of the `top` most sensitive channels, one panel per axis (the point's glossary letters: d_in, n…)."""
    axes_names = list(dict.fromkeys(df["axis"]))
    fig, (axes,) = panels(1, len(axes_names), size=(4, 0.25 * top + 1.2))
    for ax, axis in zip(axes, axes_names):
        g = df[df["axis"] == axis].nsmallest(top, "rank")
        ax.barh([str(c) for c in g["channel"]][::-1], g["flip_rate"].to_numpy()[::-1])
        ax.set(title=f"{axis} by flip rate", xlabel="flip rate", xlim=(0, 1))
    return literal_text(fig)


def overflow_note(df: pd.DataFrame) -> str:
    """"k of n runs overflowed (no prediction), counted as misses" for a sweep frame; "" if none did."""
    if "finite" not in df.columns:
        return ""
    overflowed = int((~df["finite"].astype(bool)).sum())
    return f"{overflowed} of {len(df)} runs overflowed (no prediction), counted as misses" if overflowed else ""


def _no_crossing(fits: pd.DataFrame) -> str:
    """Why the critical-level axes are empty: each status with its count of layers, and the range swept."""
    if fits.empty:
        return "no layer crossed: no fits given"
    counts = fits["status"].value_counts(sort=False)
    how = ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in counts.items())
    lo_hi = fits.attrs.get("level_range")
    where = f" in [{lo_hi[0]:g} … {lo_hi[1]:g}]" if lo_hi else ""
    return f"no layer crossed: {how}{where}"


def _fit_row(fits, model, layer, component):
    if fits is None:
        return None
    hit = fits[(fits["model"] == model) & (fits["layer"] == layer) & (fits["component"] == component)]
    return None if hit.empty else hit.iloc[0]


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres, for pcolormesh."""
    if len(centres) == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    mid = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[2 * centres[0] - mid[0]], mid, [2 * centres[-1] - mid[-1]]])
