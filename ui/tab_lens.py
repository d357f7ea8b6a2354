"""Lens tab: the logit lens (`compare.logit_lens`) of two or three models side by side, as layer ×
position heatmaps of the lens's top token (annotated) and of P(target), the frame as a table and
CSV / Parquet / PNG downloads.

The target is optional: one token as typed (" Mary") or an ID as #ID; empty, each position's
target is the model's own top-1 token there (the frame's convention). It is checked against
every picked model before any forward. The lens of each model is one forward; they run one model
after another in a worker thread (`jobs.run`), and Stop, checked between models, shows nothing
but a note (the lens of a model is computed whole). The figures come from
`compare.figures.lens.lens_heatmap`, as in the API.
"""
from __future__ import annotations

import functools

import gradio as gr
import pandas as pd

from compare import Stopped
from compare.figures import lens as lens_figures
from compare.handle.inputs import token_id
from compare.analyses.lens import logit_lens

from . import downloads, jobs, limits, models
from .tab_compare import PROMPT, model_picker
from .tab_tokenizers import visible

VIEW = "lens"
N_OUTPUTS = 5
"""What `run` updates: note, top-token heatmap, target heatmap, table, files."""
STOPPED = "**Stopped**: nothing to show (the lens of a model is computed whole)."
TARGET = " Mary"


def target_of(text: str | None) -> str | int | None:
    """The target box's value: None when empty, '#42' as token ID 42, else the token's text."""
    return None if text is None or not text.strip() else limits.token(text)


def shown(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as the table shows it: the top-k tokens and their P as text, tokens with visible whitespace."""
    table = frame.drop(columns=["top_ids"]).copy()
    table["token"] = table["token"].map(visible)
    table["target"] = table["target"].map(visible)
    table["top_tokens"] = table["top_tokens"].map(lambda tokens: " | ".join(map(visible, tokens)))
    table["top_probs"] = table["top_probs"].map(lambda probs: " ".join(f"{p:.3g}" for p in probs))
    return table


def files(frame: pd.DataFrame, figures: dict) -> list[str]:
    """The frame as CSV (lists as text) and Parquet, and each figure as PNG, in a new directory."""
    directory = downloads.new_directory()
    flat = frame.assign(**{c: frame[c].map(list) for c in ("top_tokens", "top_ids", "top_probs")})
    out = downloads.table_files(directory, flat, "lens")
    return out + [downloads.figure_file(directory, figure, f"lens_{name}") for name, figure in figures.items()]


def measured(prompt: str, target: str | int | None, chosen, progress, stop) -> pd.DataFrame:
    """The lens of every picked model, as a `jobs.run` work: arguments of all models checked
    first; `Stopped` once `stop` is set between two models."""
    handles = models.chosen(chosen)
    prompt = limits.check_prompt(prompt, handles)
    if target is not None:
        for handle in handles:
            token_id(handle, target, "target")
    frames = []
    for i, handle in enumerate(handles):
        if stop.is_set():
            raise Stopped("lens stopped")
        frames.append(logit_lens(prompt, model=handle, target=target))
        progress(i + 1, len(handles))
    if stop.is_set():
        raise Stopped("lens stopped")
    frame = pd.concat(frames, ignore_index=True)
    frame.attrs.update(tokens={k: v for f in frames for k, v in f.attrs["tokens"].items()}, lens="logit")
    return frame


def note(frame: pd.DataFrame, target) -> str:
    """What the heatmaps show: the target and each model's layers."""
    what = (f"target {visible(frame['target'].iloc[0])!r}" if target is not None
            else "no target: P of each model's own top-1 token at each position")
    layers = frame.groupby("model", sort=False)["layer"].nunique()
    return (f"Logit lens, {what}; " + " · ".join(f"{m}: {n} layers" for m, n in layers.items())
            + ". The last layer's row is the model's own prediction.")


@limits.shown_to_user
def run(prompt: str, target: str, chosen: list[str] | None = None, request: gr.Request = None,
        progress=gr.Progress()):
    """Stream: nothing while the models run, then (note, top heatmap, target heatmap, table, files);
    after Stop, the `STOPPED` note and empty outputs.

    chosen: the models' names (`models.chosen`); None or empty: the configured pair.
    """
    prompt = limits.check_text(prompt)
    target = target_of(target)
    progress(0.0, desc="loading and running the models")
    try:
        frame = yield from jobs.run(functools.partial(measured, prompt, target, chosen),
                                    tick=jobs.skips(N_OUTPUTS), key=jobs.session_key(request, VIEW),
                                    on_progress=lambda done, total: progress(done / (total + 1), desc="lens"))
    except Stopped:
        yield STOPPED, None, None, None, None
        return
    figures = {"top": lens_figures.lens_heatmap(frame, value="top"),
               "target": lens_figures.lens_heatmap(frame, value="target_prob")}
    yield note(frame, target), figures["top"], figures["target"], shown(frame), files(frame, figures)


def build(short: dict) -> None:
    with gr.Tab("Lens", id="lens"):
        gr.Markdown("Logit lens (nostalgebraist 2020): each layer's residual decoded by the model's own final "
                    "norm and unembedding: what the model would predict if it stopped there. Above: the top "
                    "token per layer and position; below: P(target), or without a target P of the token the "
                    "model itself predicts there.")
        chosen = model_picker("lens-models")
        with gr.Row():
            prompt = gr.Textbox(PROMPT, label="Prompt", lines=2, scale=4, elem_id="lens-prompt")
            target = gr.Textbox(TARGET, label="Target (optional)", info=limits.TARGET_HELP + "; empty: each "
                                "model's own top-1 token", scale=1, elem_id="lens-target")
        with gr.Row():
            button = gr.Button("Lens", variant="primary", elem_id="lens-run")
            stop = gr.Button("Stop", variant="stop", elem_id="lens-stop")
        note_box = gr.Markdown(elem_id="lens-note")
        # one figure per row: each already holds a panel per model
        top = gr.Plot(show_label=False, elem_id="lens-top")
        target_plot = gr.Plot(show_label=False, elem_id="lens-target-prob")
        table = gr.Dataframe(label="Per model, layer and position", elem_id="lens-table", wrap=True,
                             headers=["no lens yet: click Lens"])
        results = gr.File(label="Download (CSV, Parquet, PNG)", file_count="multiple", elem_id="lens-files")
        button.click(jobs.submitted(VIEW), None, None, concurrency_limit=None)  # counts it as waiting
        button.click(jobs.queued(VIEW, run), inputs=[prompt, target, chosen],
                     outputs=[note_box, top, target_plot, table, results], **short)
        stop.click(jobs.stop_handler(VIEW, "lens"), None, None, concurrency_limit=None)
