"""Figures: data in (arrays, DataFrames), a matplotlib Figure out; one panel per model, side by side.

No function here loads a model or computes a forward pass; `Comparison.figures` feeds them.
Figures are built as plain `matplotlib.figure.Figure`s, outside pyplot: no backend is touched and
nothing stays registered, so there is no global figure list to close (gr.Plot and savefig take them).

Tokens are data (house rule 19). Every text a figure draws from data — titles, token tick labels,
legend entries, table cells — is drawn literally: `literal_text` turns matplotlib's mathtext off on
each such artist (a token "$" or "$$" used to crash savefig; "a_b^c" or "$x^2$" came out as maths),
so the setting travels with the figure to any later savefig (`Comparison.save`, the app's
downloads). Numeric tick labels are left to their formatters, which write 10⁵ on a log axis in
mathtext on purpose. A token is shown as `token_label` writes it: between quotes, so leading spaces
show, with only control characters replaced by visible symbols (↵ ⇥ ␍ …).

Glyphs DejaVu Sans lacks come from fallback fonts where installed (`fallback_fonts`): Noto Sans CJK
for Chinese/Japanese/Korean (Debian fonts-noto-cjk) and Symbola for emoji (Debian fonts-symbola,
monochrome: matplotlib draws no colour fonts, and no ligatures, so a ZWJ family emoji shows as its
members side by side). Right-to-left scripts are drawn in stored order (matplotlib does no bidi).

K axes (`k_scale`): "linear", "symlog" (linear within |K| ≤ 1, logarithmic beyond; K keeps its
sign) or "log" (positive K only), and by default "auto": symlog when some |K| exceeds
`K_SYMLOG_ABOVE` — K = L / |mean L| is of order 1 unless a row's mean logit is near 0, where it
reaches 1e5 and squeezes everything else onto the axis.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import font_manager
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Text
from matplotlib.ticker import FixedFormatter, FuncFormatter, MaxNLocator

from ..measures import metrics

STYLE = "whitegrid"
PANEL = (5.5, 4.0)  # inches per model panel
TOP_MARGIN = 0.4  # inches kept empty above every figure: the app's plot label sits there
MAX_TICKS = 40  # token tick labels per axis; more positions are thinned to every n-th
MAX_ROWS = 64  # positions drawn as rows (K ridgelines, top-k tables); more: every n-th and the last
ROW_HEIGHT = 2.6  # inches per L/K/P row of the trajectories
POSITION_WIDTH = 0.35  # inches per position of the trajectories (within PANEL[0] … MAX_WIDTH)
MAX_WIDTH = 14.0
K_SCALES = ("linear", "symlog", "log")
K_SYMLOG_ABOVE = 100.0  # k_scale="auto": symlog once some |K| is above this
SCALE_ARGS = {"symlog": {"linthresh": 1.0}}  # linear for |K| ≤ 1: K's row mean is ±1
CJK_FONT, CJK_FONT_FILE = "Noto Sans CJK JP", "NotoSansCJK-Regular.ttc"  # every face has all Han, kana, hangul
EMOJI_FONT, EMOJI_FONT_FILE = "Symbola", "Symbola_hint.ttf"
# C0 controls and DEL as their Unicode pictures; C1 controls (U+0080–U+009F: no picture, no
# glyph in any font, drawn as an empty box) as escapes
_VISIBLE = ({c: chr(0x2400 + c) for c in range(0x20)} | {0x7F: "\u2421", ord("\n"): "↵", ord("\t"): "⇥"}
            | {c: f"\\x{c:02x}" for c in range(0x80, 0xA0)})


def panels(n_rows: int, n_cols: int, *, sharey=False, size=PANEL, squeeze=False):
    """A constrained-layout Figure of n_rows × n_cols axes, `size` inches each (axes 2-D unless squeeze),
    with `TOP_MARGIN` inches left empty at the top."""
    height = size[1] * n_rows + TOP_MARGIN
    fig = Figure(figsize=(size[0] * n_cols, height), layout="constrained")
    fig.get_layout_engine().set(rect=(0, 0, 1, 1 - TOP_MARGIN / height))
    return fig, fig.subplots(n_rows, n_cols, sharey=sharey, squeeze=squeeze)


def suptitle(fig: Figure, text: str) -> None:
    """The figure's title, just below the `TOP_MARGIN` that `panels` keeps empty, with the panels below it.

    (Constrained layout makes room only for a title at its automatic place, the very top.)
    """
    title = fig.suptitle(text, y=1 - TOP_MARGIN / fig.get_figheight(), va="top")
    room = TOP_MARGIN + 1.6 * title.get_fontsize() / 72
    fig.get_layout_engine().set(rect=(0, 0, 1, 1 - room / fig.get_figheight()))


def require_columns(df: pd.DataFrame, what: str, columns: Sequence[str], wanted: str) -> None:
    """Refuse a frame without the columns a figure reads (the frame of another analysis), naming
    them and the frame it takes: ``what`` names the argument or figure."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: the frame has no {', '.join(map(repr, missing))} column"
                         f"{'s' if len(missing) > 1 else ''}; pass {wanted}")


def token_label(token: str) -> str:
    """A token as figures draw it: literal, between quotes, control characters as symbols (↵ ⇥ ␍;
    C1 controls as escapes, \\x85)."""
    return f"'{token.translate(_VISIBLE)}'"


def p_label(p: float) -> str:
    """A probability to 3 significant digits, in scientific notation below 1e-3 (2.00e-04)."""
    return f"{p:.2e}" if 0 < p < 1e-3 else f"{p:.3g}"


@functools.cache
def fallback_fonts() -> tuple[str, ...]:
    """The fallback families installed, in the order tried: `CJK_FONT`, `EMOJI_FONT`.

    A font file on disk that matplotlib's cached font list does not know yet (installed after the
    cache was built) is added to the font manager here.
    """
    known = {entry.name for entry in font_manager.fontManager.ttflist}
    found = []
    for family, filename in ((CJK_FONT, CJK_FONT_FILE), (EMOJI_FONT, EMOJI_FONT_FILE)):
        if family not in known:
            path = next((p for p in font_manager.findSystemFonts() if Path(p).name == filename), None)
            if path is None:
                continue
            font_manager.fontManager.addfont(path)
        found.append(family)
    return tuple(found)


def literal_text(fig: Figure) -> Figure:
    """Make every data text of `fig` literal (no mathtext) and give it the fallback fonts; returns `fig`.

    Data text is all text but the labels a numeric formatter writes (tick labels not given as a
    list of strings, which matplotlib keeps in a Fixed/FuncFormatter; axis offset texts): those
    keep mathtext, which they use on purpose.
    """
    numeric = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            numeric.add(id(axis.offsetText))
            for labels, formatter in ((axis.get_majorticklabels(), axis.get_major_formatter()),
                                      (axis.get_minorticklabels(), axis.get_minor_formatter())):
                if not isinstance(formatter, (FixedFormatter, FuncFormatter)):
                    numeric.update(map(id, labels))
    cells = [cell.get_text() for ax in fig.axes for table in ax.tables for cell in table.get_celld().values()]
    fallback = fallback_fonts()
    for text in fig.findobj(Text) + cells:
        if id(text) in numeric:
            continue
        text.set_parse_math(False)
        family = text.get_fontfamily()
        text.set_fontfamily([*family, *(f for f in fallback if f not in family)])
    return fig


def check_k_scale(k_scale: str, K) -> str:
    """The scale for K: `k_scale` itself, or for "auto" symlog when some |K| > K_SYMLOG_ABOVE, else linear."""
    if k_scale == "auto":
        return "symlog" if np.nanmax(np.abs(np.asarray(K, dtype=np.float64)), initial=0) > K_SYMLOG_ABOVE else "linear"
    if k_scale not in K_SCALES:
        raise ValueError(f"k_scale must be 'auto' or one of {', '.join(map(repr, K_SCALES))}; got {k_scale!r}")
    return k_scale


def position_ticks(ax, tokens: Sequence[str], *, positions=None, at=None) -> None:
    """Label the x axis `t: 'token'`, every n-th when more than `MAX_TICKS`.

    positions: the position t of each token (default 0, 1, …); at: where on the axis (default t).
    """
    positions = np.arange(len(tokens)) if positions is None else np.asarray(positions)
    at = positions if at is None else np.asarray(at)
    shown = range(0, len(tokens), max(1, math.ceil(len(tokens) / MAX_TICKS)))
    ax.set_xticks([at[i] for i in shown], [f"{positions[i]}: {token_label(tokens[i])}" for i in shown],
                  rotation=60, ha="right", rotation_mode="anchor", fontsize=7)


def row_positions(T: int) -> list[int]:
    """The positions drawn as rows: all T up to `MAX_ROWS`, else every n-th from 0 and the last
    (the prediction a prompt is run for), `MAX_ROWS` in all. A row per position of a long prompt
    made figures hundreds of inches tall; the data keep every position."""
    if T <= MAX_ROWS:
        return list(range(T))
    return list(range(0, T - 1, math.ceil((T - 1) / (MAX_ROWS - 1)))) + [T - 1]


def rows_note(shown: Mapping[str, Sequence[int]], T: Mapping[str, int]) -> str:
    """' (n of T positions: one in k and the last)' for a figure whose rows were thinned, else ''."""
    thinned = {name: rows for name, rows in shown.items() if len(rows) < T[name]}
    if not thinned:
        return ""
    name, rows = next(iter(thinned.items()))
    return f" ({len(rows)} of {T[name]} positions: one in {rows[1] - rows[0]} and the last)"


def k_distributions(k: Mapping[str, np.ndarray], tokens: Mapping[str, Sequence[str]], *,
                    bins: int = 80, k_scale: str = "auto") -> Figure:
    """Ridgeline of each position's K histogram (log counts, so a small tail bump stays visible).

    k: model → K [T, V]; tokens: model → the T input tokens, used as row labels. Beyond `MAX_ROWS`
    positions, one in n and the last are drawn (`row_positions`), as the title says.
    k_scale: the K axis, see the module docstring ("log" shows positive K only); bins are even on it.
    """
    scale = check_k_scale(k_scale, np.concatenate([np.ravel(K) for K in k.values()]))
    rows = {name: row_positions(len(K)) for name, K in k.items()}
    with sns.axes_style(STYLE):
        height = max(PANEL[1], 0.45 * max(len(r) for r in rows.values()))
        fig, axes = panels(1, len(k), size=(PANEL[0], height))
        for ax, (name, K) in zip(axes[0], k.items()):
            K = np.asarray(K, dtype=np.float64)[rows[name]]
            ax.set_xscale(scale, **SCALE_ARGS.get(scale, {}))
            shown = K[K > 0] if scale == "log" else K
            if not shown.size:
                raise ValueError(f"k_scale='log' needs positive K; {name} has none (use 'symlog')")
            to_axis = ax.xaxis.get_transform()
            edges = to_axis.inverted().transform(np.linspace(*to_axis.transform([shown.min(), shown.max()]), bins + 1))
            centres = to_axis.inverted().transform((to_axis.transform(edges[:-1]) + to_axis.transform(edges[1:])) / 2)
            colours = sns.color_palette("viridis", len(K))
            for t, row in enumerate(K):
                counts = np.log1p(np.histogram(row, bins=edges)[0])
                curve = 0.9 * counts / counts.max() if counts.max() > 0 else counts
                ax.fill_between(centres, -t, -t + curve, color=colours[t], alpha=0.6, lw=0.6, ec="k")
            ax.set_yticks(-np.arange(len(K)) + 0.3)
            ax.set_yticklabels([f"{t}: {token_label(tokens[name][t])}" for t in rows[name]], fontsize=7)
            ax.set_xlabel(f"K = L / |mean(L)| ({scale})")
            ax.set_title(name)
        axes[0][0].set_ylabel("position: input token")
        note = rows_note(rows, {name: len(K) for name, K in k.items()})
        suptitle(fig, f"Distribution of normalised logits K per position (log counts){note}")
    return literal_text(fig)


def trajectories(frame: pd.DataFrame, *, k_scale: str = "auto",
                 tokens: Mapping[str, Sequence[str]] | None = None) -> Figure:
    """L, K and P of each tracked token over the positions; rows L/K/P, one column per model.

    frame: columns model, tracked, position, L, K, P (as `Comparison.tracked_frame`).
    k_scale: the K rows' y axis, see the module docstring.
    tokens: model → its input tokens; positions are then labelled `t: 'token'` (every n-th when
        more than `MAX_TICKS`).
    """
    models = list(dict.fromkeys(frame["model"]))
    scale = check_k_scale(k_scale, frame["K"])
    colours = dict(zip(dict.fromkeys(frame["tracked"]), sns.color_palette(n_colors=frame["tracked"].nunique())))
    width = min(max(PANEL[0], POSITION_WIDTH * frame["position"].nunique()), MAX_WIDTH)
    with sns.axes_style(STYLE):
        fig, axes = panels(3, len(models), size=(width, ROW_HEIGHT))
        for col, name in enumerate(models):
            data = frame[frame["model"] == name]
            for row, quantity in enumerate(("L", "K", "P")):
                ax = axes[row][col]
                for label, g in data.groupby("tracked", sort=False):
                    ax.plot(g["position"], g[quantity], marker="o", ms=4, color=colours[label])
                if quantity == "K":
                    ax.set_yscale(scale, **SCALE_ARGS.get(scale, {}))
                ax.set_ylabel(quantity)
                ax.set_title(f"{name}: {quantity}" if row == 0 else quantity if quantity != "K" else f"K ({scale})")
                if tokens is not None:
                    position_ticks(ax, tokens[name])
                else:
                    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                if row < 2:
                    ax.set_xlabel("")
                    ax.tick_params(labelbottom=False)
                else:
                    ax.set_xlabel("position: input token" if tokens is not None else "position")
        # one legend for all panels; handles and labels explicit: matplotlib hides a label "_x" it collects
        handles = [Line2D([], [], marker="o", ms=4, color=c) for c in colours.values()]
        fig.legend(handles, list(colours), title="tracked token", loc="outside lower center", fontsize="small",
                   ncols=min(len(colours), 6))
        suptitle(fig, "Tracked tokens over positions: logit L, normalised logit K, probability P")
    return literal_text(fig)


def flattened_logits(logits: Mapping[str, np.ndarray], *, tokens: Mapping[str, Sequence[str]] | None = None) -> Figure:
    """Every position's L row concatenated into one vector per model; shaded blocks = positions.

    tokens: model → its input tokens, to label the blocks `t: 'token'` (default: positions only).
    """
    with sns.axes_style("white"):
        fig, axes = panels(len(logits), 1, size=(11.0, 2.8 if tokens is None else 3.4))
        for ax, (name, L) in zip(axes[:, 0], logits.items()):
            L = np.asarray(L)
            T, V = L.shape
            ax.plot(np.arange(T * V), L.ravel(), lw=0.3, color="C0", rasterized=True)
            for t in range(0, T, 2):
                ax.axvspan(t * V, (t + 1) * V, color="0.92", zorder=0)
            if tokens is not None:
                position_ticks(ax, tokens[name], at=(np.arange(T) + 0.5) * V)
            else:
                step = max(1, T // 20)
                ax.set_xticks([(t + 0.5) * V for t in range(0, T, step)], [str(t) for t in range(0, T, step)])
            ax.set_xlim(0, T * V)
            ax.set_xlabel("position (each block: the whole vocabulary)")
            ax.set_ylabel("L")
            ax.set_title(name)
        suptitle(fig, "Flattened logit vector: all positions concatenated")
    return literal_text(fig)


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
        suptitle(fig, "Tokenizer: token ID vs token length")
    return literal_text(fig)


def top_k_table(frame: pd.DataFrame) -> Figure:
    """Per position, the k most probable next tokens with P, as a table per model.

    frame: columns model, position, token, rank, candidate, p (as `Comparison.top_k_frame`).
    P is written to 3 significant digits (`p_label`), so GPT-2's small P stay apart. Beyond
    `MAX_ROWS` positions, one in n and the last are shown (`row_positions`), as the title says.
    """
    models = list(dict.fromkeys(frame["model"]))
    k = int(frame["rank"].max())
    T = frame.groupby("model")["position"].nunique().to_dict()
    shown = {name: row_positions(T[name]) for name in models}
    n_rows = max(len(rows) for rows in shown.values())
    fig, axes = panels(1, len(models), size=(1.6 * (k + 1), 0.2 * (n_rows + 1) + 0.4))
    for ax, name in zip(axes[0], models):
        data = frame[(frame["model"] == name) & frame["position"].isin(shown[name])].sort_values(["position", "rank"])
        cells = [[f"{token_label(c)} {p_label(p)}" for c, p in zip(g["candidate"], g["p"])]
                 for _, g in data.groupby("position", sort=True)]
        inputs = [f"{t}: {token_label(tok)}" for t, tok in data.groupby("position", sort=True)["token"].first().items()]
        ax.axis("off")
        table = ax.table(cellText=cells, rowLabels=inputs, colLabels=[f"top {r}" for r in range(1, k + 1)],
                         bbox=(0, 0, 1, 1), cellLoc="left")
        table.auto_set_font_size(False)
        table.set_fontsize(7)
        ax.set_title(name)
    suptitle(fig, f"Top-{k} next-token predictions per position (token, P){rows_note(shown, T)}")
    return literal_text(fig)


def pattern_lock_in(frame: pd.DataFrame, lock_in: Mapping[str, int | None] | None = None, *,
                    p_scale: str = "linear") -> Figure:
    """P of the pattern's next token at each position, one panel per model (stacked, so that the
    positions line up), lock-in marked.

    frame: one row per (model, position), columns
        model     the model's name (one panel each, in order of appearance)
        position  the input position t
        token     the input token at t (x tick labels `t: 'token'`)
        P_next    the probability the model gives, reading up to t, to the token that continues
                  the pattern at t + 1
    lock_in: model → the first position after which the model's argmax always continues the
        pattern, or None when it never does (as `Comparison.runs[name].lock_in`); it is drawn as
        a vertical dashed line and named in the title. Models left out (or lock_in=None) get neither.
    p_scale: "linear" or "log" for the P axis (log shows how far below 1 P starts).
    """
    missing = [c for c in ("model", "position", "token", "P_next") if c not in frame.columns]
    if missing:
        raise ValueError(f"frame: missing columns {missing}; needs model, position, token, P_next")
    if p_scale not in ("linear", "log"):
        raise ValueError(f"p_scale must be 'linear' or 'log'; got {p_scale!r}")
    models = list(dict.fromkeys(frame["model"]))
    n_positions = frame.groupby("model")["position"].nunique().max()
    width = min(max(PANEL[0], POSITION_WIDTH * n_positions), MAX_WIDTH)
    with sns.axes_style(STYLE):
        fig, axes = panels(len(models), 1, size=(width, 3.0))
        for ax, name in zip(axes[:, 0], models):
            data = frame[frame["model"] == name].sort_values("position")
            ax.plot(data["position"], data["P_next"], marker="o", ms=3, color="C0", label="P(next pattern token)")
            title = name
            if lock_in is not None and name in lock_in:
                at = lock_in[name]
                title = f"{name}: no lock-in" if at is None else f"{name}: locks in at position {at}"
                if at is not None:
                    ax.axvline(at, color="C3", ls="--", lw=1.2, label="lock-in")
            ax.set_yscale(p_scale)
            if p_scale == "linear":
                ax.set_ylim(-0.02, 1.02)
            position_ticks(ax, list(data["token"]), positions=data["position"].to_numpy())
            ax.set(title=title, xlabel="position: input token", ylabel="P(next pattern token)")
            ax.legend(fontsize="small", loc="lower right")
        suptitle(fig, "Pattern continuation: P of the next pattern token per position")
    return literal_text(fig)


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
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel(f"position ({a})")
            ax.set_ylabel("Jensen–Shannon divergence (bits)")
            ax.set_title(f"{a} vs {b}: agreement {data['agree'].mean():.0%}")
            ax.legend(fontsize=8)
        suptitle(fig, "Cross-model divergence over shared tokens")
    return literal_text(fig)
