"""Distributions tab: K per position for the session's latest comparison, the tail bump, flat L.

It reads the `Comparison` the Compare tab left in the session state, so nothing is recomputed;
the statistics (mean, variance, skew, tail-bump outliers) are `compare.compare`'s own.
"""
from __future__ import annotations

import gradio as gr
import pandas as pd

from compare import figures

from . import limits
from .tab_tokenizers import visible


def k_table(comparison) -> pd.DataFrame:
    """Per model and position: K mean, variance, skew, whether a tail bump shows, and its tokens."""
    rows = []
    for name, run in comparison.runs.items():
        stats = run.k_stats.copy()
        stats.insert(0, "model", name)
        stats.insert(2, "token", [visible(t) for t in run.tokens])
        stats["outliers"] = [" ".join(visible(t) for t in tokens) for tokens in stats["outliers"]]
        rows.append(stats)
    return pd.concat(rows, ignore_index=True).round(4)


@limits.shown_to_user
def show(comparison):
    """K ridgelines, the K-statistics table and the flattened L of the latest comparison."""
    if comparison is None:
        raise limits.InputError("no comparison yet: run a prompt on the Compare tab first")
    names = list(comparison.runs)
    ridgelines = figures.k_distributions({n: comparison.runs[n].k for n in names},
                                         {n: comparison.runs[n].tokens for n in names})
    flat = figures.flattened_logits({n: comparison.runs[n].logits for n in names})
    return ridgelines, k_table(comparison), flat


def build(comparison: gr.State) -> None:
    with gr.Tab("Distributions", id="distributions"):
        gr.Markdown("K (each logit ÷ |its row's mean|) over the vocabulary at every position of the latest "
                    "Compare run. A *tail bump* is a separate cluster of outlying K values; the table lists "
                    "its tokens (␣ space, ↵ newline).")
        button = gr.Button("Show distributions of the latest comparison", variant="primary", elem_id="dist-run")
        ridgelines = gr.Plot(label="K distribution per position", elem_id="dist-k")
        table = gr.Dataframe(label="K statistics and tail-bump tokens", elem_id="dist-table", wrap=True)
        flat = gr.Plot(label="Flattened L (all positions' logits in a row)", elem_id="dist-flat")
        button.click(show, inputs=comparison, outputs=[ridgelines, table, flat])
