"""The trajectories and cross-model figures as Vega-Lite specifications: drawn by the browser.

`base.trajectories` and `base.cross_model` draw these figures with matplotlib (files, reports);
a matplotlib figure of six panels costs ~0.4 s of CPU to lay out, draw and encode, several times
the forward passes of a small pair. A Vega-Lite specification is the same data and layout as a
JSON-able dict: Gradio's `gr.Plot` hands it to vega-embed in the page (`altair` plots), and
`altair.Chart.from_dict` or the Vega editor read it too. The panels are the matplotlib figures':
rows L, K, P and a column per model; one panel per model pair. Tokens are labelled as `base.token_label`
writes them (Vega draws text literally: no markup to turn off).

Non-finite values (an overflowed logit, K of a row whose mean is 0) are written as null, which
Vega leaves out of the line; JSON has no NaN.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .base import check_k_scale, token_label

SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
BACKGROUND = "white"  # Vega's default is transparent: its dark text would vanish on a dark page theme
WIDTH = 1000  # pixels of all panels side by side (the app's page is ~1,200 wide)
MAX_PANEL_WIDTH = 640
AXIS_WIDTH = 48  # pixels kept for each y axis' labels, so that the rows' panels line up
ROW_HEIGHT = 150  # pixels per L/K/P row
CROSS_HEIGHT = 260
TRACKED_TITLE = "Tracked tokens over positions: logit L, normalised logit K, probability P"
CROSS_TITLE = "Cross-model divergence over shared tokens"
CROSS_SERIES = {"JS (bits)": "#4c72b0", "same top-1 prediction": "#55a868", "split token": "#c44e52"}
"""Series of the cross-model panels and their colours (seaborn's deep C0, C2, C3, as `base.cross_model`)."""
X_SHAPE = "M-1,-1L1,1M-1,1L1,-1"  # matplotlib's "x" marker as an SVG path (Vega's "cross" is a plus)


def finite(value) -> float | None:
    """A number as JSON can hold it: None for NaN and ±inf."""
    value = float(value)
    return value if math.isfinite(value) else None


def panel_width(n_panels: int) -> int:
    """Pixels per panel of `n_panels` side by side (x labels are thinned to fit: `labelOverlap`)."""
    return min(WIDTH // n_panels, MAX_PANEL_WIDTH)


def symlog_ticks(values) -> list[float]:
    """0 and the powers of ten ±1, ±10, … that the values reach (Vega's own symlog ticks are a
    few linear ones, 0 100 200, which hide the orders of magnitude the axis is there for)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    top = math.ceil(math.log10(max(np.abs(values).max(initial=1.0), 1.0)))
    ticks = [0.0]
    for sign, reached in ((1, values.max(initial=0) > 0), (-1, values.min(initial=0) < 0)):
        if reached:
            ticks += [sign * 10.0 ** k for k in range(top + 1)]
    return sorted(ticks)


def position_label(position: int, tokens: Sequence[str] | None) -> str:
    """`t: 'token'` as `base.position_ticks` writes it, or `t` without tokens."""
    return str(position) if tokens is None else f"{position}: {token_label(tokens[position])}"


def trajectories(frame: pd.DataFrame, *, k_scale: str = "auto",
                 tokens: Mapping[str, Sequence[str]] | None = None) -> dict:
    """L, K and P of each tracked token over the positions (`base.trajectories` as Vega-Lite).

    frame: columns model, tracked, position, L, K, P (as `Comparison.tracked_frame`).
    k_scale: the K row's y axis (`base.check_k_scale`): Vega's symlog is sign(K)·log(1 + |K|),
        near linear within |K| ≤ 1 like matplotlib's (linthresh 1); "log" leaves out K ≤ 0.
    tokens: model → its input tokens; positions are then labelled `t: 'token'`.
    Returns a dict: rows L, K, P (vconcat), each faceted by model with its own x axis.
    """
    models = list(dict.fromkeys(frame["model"]))
    tracked = list(dict.fromkeys(frame["tracked"]))
    scale = check_k_scale(k_scale, frame["K"])
    values = [{"model": model, "tracked": label, "position": int(t),
               "label": position_label(int(t), None if tokens is None else tokens[model]),
               "L": finite(L), "K": finite(K), "P": finite(P)}
              for model, label, t, L, K, P in frame[["model", "tracked", "position", "L", "K", "P"]].itertuples(index=False)]
    width = panel_width(len(models))
    k_title = f"K ({scale})"
    rows = []
    for row, quantity in enumerate(("L", "K", "P")):
        y = {"field": quantity, "type": "quantitative", "title": k_title if quantity == "K" else quantity,
             "scale": {"zero": False}, "axis": {"minExtent": AXIS_WIDTH}}
        if quantity == "K" and scale != "linear":
            y["scale"] = {"type": scale, **({"constant": 1} if scale == "symlog" else {})}
        if quantity == "K" and scale == "symlog":
            y["axis"]["values"] = symlog_ticks(frame["K"])
        last = row == 2
        spec = {
            "width": width, "height": ROW_HEIGHT,
            "mark": {"type": "line", "point": True},
            "encoding": {
                "x": {"field": "label", "type": "ordinal", "sort": {"field": "position", "op": "min"},
                      "title": ("position: input token" if tokens is not None else "position") if last else None,
                      "axis": {"labels": last, "labelAngle": -60, "labelOverlap": "parity", "labelLimit": 160,
                               "ticks": True}},
                "y": y,
                "color": {"field": "tracked", "type": "nominal", "sort": tracked,
                          "legend": {"title": "tracked token", "orient": "bottom"}},
                "tooltip": [{"field": "model"}, {"field": "tracked", "title": "tracked token"},
                            {"field": "label", "title": "position: input token"},
                            {"field": quantity, "type": "quantitative", "format": ".4g"}],
            },
        }
        if quantity == "K" and scale == "log":
            spec["transform"] = [{"filter": "datum.K > 0"}]
        rows.append({
            "facet": {"column": {"field": "model", "type": "nominal", "sort": models,
                                 "header": {"title": None, "labels": row == 0, "labelFontSize": 13}}},
            "spec": spec,
            "resolve": {"scale": {"x": "independent"}},
        })
    return {"$schema": SCHEMA, "background": BACKGROUND, "title": {"text": TRACKED_TITLE, "anchor": "middle"},
            "data": {"values": values}, "vconcat": rows, "spacing": 6}


def cross_model(frame: pd.DataFrame) -> dict:
    """JS divergence per paired position, agreeing positions ringed, split tokens crossed
    (`base.cross_model` as Vega-Lite); one panel per pair, titled with its agreement rate. The
    legend names all three series (the colour scale's domain) even where a panel has no ring or cross.

    frame: as `Comparison.cross` (model, other, position, js, agree, split).
    """
    pairs = list(dict.fromkeys(zip(frame["model"], frame["other"])))
    colour = {"scale": {"domain": list(CROSS_SERIES), "range": list(CROSS_SERIES.values())},
              "legend": {"title": None, "orient": "bottom", "direction": "horizontal"}}
    panels = []
    for a, b in pairs:
        data = frame[(frame["model"] == a) & (frame["other"] == b)]
        values = [{"position": int(t), "js": finite(js), "agree": bool(agree), "split": bool(split)}
                  for t, js, agree, split in data[["position", "js", "agree", "split"]].itertuples(index=False)]
        x = {"field": "position", "type": "quantitative", "title": f"position ({a})",
             "axis": {"tickMinStep": 1, "format": "d"}}
        y = {"field": "js", "type": "quantitative", "scale": {"domain": [0, 1]},
             "title": "Jensen–Shannon divergence (bits)"}
        tooltip = [{"field": "position"}, {"field": "js", "type": "quantitative", "format": ".3f", "title": "JS (bits)"},
                   {"field": "agree", "title": "same top-1"}, {"field": "split", "title": "split token"}]
        series = list(CROSS_SERIES)
        panels.append({
            "title": f"{a} vs {b}: agreement {data['agree'].mean():.0%}",
            "width": panel_width(len(pairs)), "height": CROSS_HEIGHT, "data": {"values": values},
            "layer": [
                {"mark": {"type": "line", "point": True},
                 "encoding": {"x": x, "y": y, "color": {"datum": series[0], **colour}, "tooltip": tooltip}},
                # marks only where some position has them: an empty layer has no extent (a console warning)
                *([{"transform": [{"filter": "datum.agree"}],
                    "mark": {"type": "point", "size": 160, "strokeWidth": 2},
                    "encoding": {"x": x, "y": y, "color": {"datum": series[1], **colour}}}] if data["agree"].any() else []),
                *([{"transform": [{"filter": "datum.split"}],
                    "mark": {"type": "point", "shape": X_SHAPE, "size": 90, "strokeWidth": 2},
                    "encoding": {"x": x, "y": y, "color": {"datum": series[2], **colour}}}] if data["split"].any() else []),
            ],
        })
    return {"$schema": SCHEMA, "background": BACKGROUND, "title": {"text": CROSS_TITLE, "anchor": "middle"},
            "hconcat": panels,
            "resolve": {"scale": {"color": "shared"}}}
