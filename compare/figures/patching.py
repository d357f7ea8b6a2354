"""Figures of the causal tools: data in (the frames of `patch_sweep` and `causal_trace`,
`AttentionMap`s), a matplotlib Figure out, one panel per model side by side (`figures.panels`).

Heatmaps put layers on the y axis (0 at the bottom, as the residual stream rises) and positions
on the x axis, labelled with the clean prompt's tokens where the frame holds single positions;
a hybrid's layer labels name each layer's kind ("3 · attention"). `recovery_by_kind` also marks
every layer's kind with a coloured strip beside each panel, one colour per kind across all panels,
so a hybrid's attention and SSM layers line up against a pure SSM and a pure transformer.
Recovery and indirect effects are signed, so their colour scale is diverging and centred at 0;
attention patterns are probabilities, on a sequential scale. A panel with no finite value
(recovery of a model whose clean and corrupt runs agree is 0/0) says so on its axes instead of
being left blank.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .base import PANEL, TOP_MARGIN, literal_text, panels, require_columns, suptitle, token_label

PATCH_COLUMNS = ("model", "layer", "position", "component")  # what every heatmap here reads
STRIP_WIDTH = 0.35  # inches of the kind strip beside each panel


def recovery_heatmaps(df: pd.DataFrame) -> Figure:
    """Recovery over layer × position, one panel per model (a `patch_sweep` frame)."""
    require_columns(df, "recovery_heatmaps", PATCH_COLUMNS + ("recovery",), "a patch_sweep or attribution_patch frame")
    tokens = df.attrs.get("tokens", {})
    return _heatmaps(df, "recovery", lambda model: tokens.get(model),
                     f"recovery of {df.attrs.get('metric', 'the metric')} when patching "
                     f"{', '.join(dict.fromkeys(df['component'].astype(str)))}",
                     lambda model: _undefined_recovery(df.attrs, model))


def trace_heatmaps(df: pd.DataFrame) -> Figure:
    """Indirect effect over layer × position, one panel per model (a `causal_trace` frame)."""
    require_columns(df, "trace_heatmaps", PATCH_COLUMNS + ("indirect_effect",), "a causal_trace frame")
    tokens = {model: g.sort_values("position").drop_duplicates("position")["token"].tolist()
              for model, g in df.groupby("model", sort=False)}
    return _heatmaps(df, "indirect_effect", tokens.get,
                     f"indirect effect of restoring {', '.join(dict.fromkeys(df['component'].astype(str)))}",
                     lambda model: "no finite indirect effect to show")


def attention_maps(maps) -> Figure:
    """Token-to-token weights of each `AttentionMap` side by side (reduced maps, [T, T])."""
    fig, (axes,) = panels(1, len(maps), size=(4.6, 4.2))
    for ax, m in zip(axes, maps):
        weights = np.asarray(m.weights, dtype=float)
        if weights.ndim != 2:
            raise ValueError(f"attention_maps: {m.model}'s map is {weights.shape}; reduce it to [T, T] first")
        if m.kind == "pattern":
            image = ax.imshow(weights, cmap="viridis", vmin=0, vmax=max(weights.max(), 1e-12))
        else:
            limit = max(np.abs(weights).max(), 1e-12)
            image = ax.imshow(weights, cmap="RdBu_r", vmin=-limit, vmax=limit)
        labels = [token_label(t) for t in m.tokens]
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize="x-small")
        ax.set_yticks(range(len(labels)), labels, fontsize="x-small")
        ax.set(title=f"{m.model} layer {m.layer}: {m.kind} ({m.reduce})", xlabel="source s", ylabel="target t")
        fig.colorbar(image, ax=ax, shrink=0.8)
    return literal_text(fig)


def _undefined_recovery(attrs: dict, model: str) -> str:
    """Why a model's recovery has no finite value: its clean and corrupt runs agree (0/0)."""
    if attrs.get("tokens", {}).get(model) is not None and \
            attrs.get("tokens", {}).get(model) == attrs.get("corrupt_tokens", {}).get(model):
        return "clean and corrupt prompts are identical:\nrecovery is undefined (0/0)"
    m_clean, m_corrupt = attrs.get("m_clean", {}).get(model), attrs.get("m_corrupt", {}).get(model)
    if m_clean is not None and m_clean == m_corrupt:
        return f"clean and corrupt runs agree (m_clean = m_corrupt = {m_clean:.4g}):\nrecovery is undefined (0/0)"
    return "no finite recovery to show"


def _layer_labels(g: pd.DataFrame, layers: list) -> list[str]:
    """Layer tick labels, each with its kind ("3 · attention") where the model's rows hold more
    than one kind (a hybrid); a model of one kind, or a frame without `kind`, shows bare layers."""
    kinds = g.drop_duplicates("layer").set_index("layer")["kind"] if "kind" in g.columns else None
    if kinds is None or kinds.nunique() < 2:
        return [str(layer) for layer in layers]
    return [f"{layer} · {kinds[layer]}" for layer in layers]


def recovery_by_kind(df: pd.DataFrame) -> Figure:
    """Recovery over layer × position, one panel per model, each layer's kind marked (a `patch_sweep`
    frame with a `kind` column, e.g. of a hybrid, Mamba and GPT-2 side by side).

    Left of each heatmap a strip of one cell per layer is coloured by that layer's kind (one
    colour per kind, the same in every panel, named in the figure's legend) and its ticks read
    "layer · kind"; the heatmap's rows are the same layers.
    """
    if "kind" not in df.columns:
        raise ValueError("recovery_by_kind: the frame has no 'kind' column; pass a patch_sweep frame "
                         "(or use recovery_heatmaps)")
    require_columns(df, "recovery_by_kind", PATCH_COLUMNS + ("recovery",), "a patch_sweep or attribution_patch frame")
    unknown = df[df["kind"].isna()]
    if len(unknown):
        raise ValueError(f"recovery_by_kind: the 'kind' column is empty at layer {unknown['layer'].iloc[0]} of "
                         f"{unknown['model'].iloc[0]}; every row needs its layer's kind (as patch_sweep writes it)")
    models = list(dict.fromkeys(df["model"]))
    if not models:
        raise ValueError("no rows to draw: the frame is empty")
    kinds = sorted(df["kind"].dropna().astype(str).unique())
    colours = [f"C{i % 10}" for i in range(len(kinds))]
    height = PANEL[1] + TOP_MARGIN
    fig = Figure(figsize=((PANEL[0] + STRIP_WIDTH) * len(models), height), layout="constrained")
    fig.get_layout_engine().set(rect=(0, 0, 1, 1 - TOP_MARGIN / height))
    axes = fig.subplots(1, 2 * len(models), squeeze=False,
                        width_ratios=[STRIP_WIDTH, PANEL[0] - 0.6] * len(models))[0]
    tokens = df.attrs.get("tokens", {})
    for strip, ax, model in zip(axes[::2], axes[1::2], models):
        g = df[df["model"] == model]
        layers = sorted(g["layer"].unique())
        _heatmap(fig, ax, g, "recovery", tokens.get(model), lambda: _undefined_recovery(df.attrs, model))
        by_layer = g.drop_duplicates("layer").set_index("layer")["kind"].astype(str)
        strip.imshow([[kinds.index(by_layer[layer])] for layer in layers], origin="lower", aspect="auto",
                     cmap=ListedColormap(colours), vmin=-0.5, vmax=len(kinds) - 0.5)
        strip.set_xticks([])
        strip.set_yticks(range(len(layers)), [f"{layer} · {by_layer[layer]}" for layer in layers], fontsize="x-small")
        strip.set_ylabel("layer · kind")
        strip.set_ylim(ax.get_ylim())
        ax.tick_params(axis="y", labelleft=False)
        ax.set_ylabel("")
        strip.grid(False)
    fig.legend(handles=[Patch(color=c, label=k) for k, c in zip(kinds, colours)], title="layer kind",
               loc="outside lower center", ncols=len(kinds), fontsize="small")
    suptitle(fig, f"recovery of {df.attrs.get('metric', 'the metric')} when patching "
                  f"{', '.join(dict.fromkeys(df['component'].astype(str)))}, by layer kind")
    return literal_text(fig)


def _heatmaps(df: pd.DataFrame, value: str, tokens_of, title: str, why_blank) -> Figure:
    models = list(dict.fromkeys(df["model"]))
    if not models:
        raise ValueError("no rows to draw: the frame is empty")
    fig, (axes,) = panels(1, len(models), size=(5.2, 4))
    for ax, model in zip(axes, models):
        _heatmap(fig, ax, df[df["model"] == model], value, tokens_of(model), lambda: why_blank(model))
    suptitle(fig, title)
    return literal_text(fig)


def _heatmap(fig: Figure, ax, g: pd.DataFrame, value: str, tokens, why_blank) -> None:
    """One model's rows `g` as a layer × position heatmap of `value` on `ax`, with its colour bar."""
    positions = list(dict.fromkeys(g["position"]))
    layers = sorted(g["layer"].unique())
    grid = (g.assign(position=pd.Categorical(g["position"], positions, ordered=True))
            .pivot_table(index="layer", columns="position", values=value, aggfunc="mean", observed=False)
            .reindex(index=layers, columns=positions).to_numpy(float))
    limit = max(np.nanmax(np.abs(grid)) if np.isfinite(grid).any() else 1.0, 1e-12)
    image = ax.imshow(grid, origin="lower", aspect="auto", cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -limit, limit))
    labels = [token_label(tokens[p]) if tokens is not None and isinstance(p, (int, np.integer)) and p < len(tokens)
              else str(p) for p in positions]
    ax.set_xticks(range(len(positions)), labels, rotation=90, fontsize="x-small")
    ax.set_yticks(range(len(layers)), _layer_labels(g, layers), fontsize="x-small")
    ax.set(title=g["model"].iloc[0], xlabel="position", ylabel="layer")
    if not np.isfinite(grid).any():
        ax.text(0.5, 0.5, why_blank(), transform=ax.transAxes, ha="center", va="center", fontsize="small", wrap=True)
    fig.colorbar(image, ax=ax, shrink=0.8, label=value.replace("_", " "))
