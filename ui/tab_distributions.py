"""Distributions tab: K per position for the session's latest comparison, the tail bump, flat L.

It shows the Compare tab's current prompt: the `Comparison` the Compare tab left in the session
state when it is of that prompt and variant (nothing recomputed), else a new one (a cached
example fills the Compare tab without running it), which then becomes the session's. The
statistics (mean, variance, skew, tail-bump outliers) are `compare.compare`'s own.
"""
from __future__ import annotations

import gradio as gr
import pandas as pd

from compare import Stopped, compare
from compare.figures import base as figures

from . import jobs, limits, models, tab_compare
from .tab_tokenizers import visible

VIEW = "distributions"
STOPPED = "Stopped before the models finished: nothing to show (a comparison is computed whole)."


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
def show(comparison, prompt: str | None = None, variant: str = "aligned", track: str | None = None,
         chosen: list[str] | None = None, k_axis: str = "auto", request: gr.Request = None):
    """K ridgelines, the K-statistics table, the flattened L, and the Comparison they come from.

    chosen: the Compare tab's models (`models.chosen`); the latest comparison is reused when it is
    of the same prompt, variant and models. An empty prompt is refused (never the previous
    comparison shown under it).
    """
    limits.check_text(prompt, "prompt (on the Compare tab)")
    handles = models.chosen(chosen)
    if not tab_compare.is_of(comparison, prompt, variant, handles):
        prompt = tab_compare.check(prompt, variant, handles)
        try:
            comparison = yield from jobs.run(
                lambda progress, stop: compare(prompt, handles, variant=variant,
                                               track=tab_compare.tracked_tokens(track), progress=False,
                                               stop=stop),
                tick=jobs.skips(4), key=jobs.session_key(request, VIEW))
        except Stopped:
            gr.Info(STOPPED)
            return
    names = list(comparison.runs)
    tokens = {n: comparison.runs[n].tokens for n in names}
    ridgelines = figures.k_distributions({n: comparison.runs[n].k for n in names}, tokens,
                                         k_scale=k_axis or "auto")
    flat = figures.flattened_logits({n: comparison.runs[n].logits for n in names}, tokens=tokens)
    yield ridgelines, k_table(comparison), flat, comparison


def build(comparison: gr.State, compare_inputs: list, heavy: dict) -> None:
    with gr.Tab("Distributions", id="distributions"):
        gr.Markdown("K (each logit ÷ |its row's mean|) over the vocabulary at every position of the Compare "
                    "tab's prompt (the latest Compare run when it is of that prompt). A *tail bump* is a "
                    "separate cluster of outlying K values; the table lists its tokens (␣ space, ↵ newline).")
        with gr.Row():
            button = gr.Button("Show distributions of the Compare tab's prompt", variant="primary",
                               elem_id="dist-run", scale=3)
            stop = gr.Button("Stop", variant="stop", elem_id="dist-stop", scale=1)
            k_axis = gr.Radio(list(tab_compare.K_SCALES), value="auto", label="K axis", elem_id="dist-k-axis")
        ridgelines = gr.Plot(show_label=False, elem_id="dist-k")
        # wrap=False: wrapped, the narrow columns' headers broke inside words ("pos iti on")
        table = gr.Dataframe(label="K statistics and tail-bump tokens", elem_id="dist-table", wrap=False,
                             headers=["no distributions yet: click Show distributions"])
        flat = gr.Plot(show_label=False, elem_id="dist-flat")
        button.click(jobs.submitted(VIEW), None, None, concurrency_limit=None)  # counts it as waiting
        button.click(jobs.queued(VIEW, show),
                     inputs=[comparison, *compare_inputs, k_axis], outputs=[ridgelines, table, flat, comparison],
                     **heavy)
        stop.click(jobs.stop_handler(VIEW, "distributions job"), None, None, concurrency_limit=None)
