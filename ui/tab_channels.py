"""Channel sensitivity, inside the Noise tab: which channels of one layer's component carry the prediction.

`compare.channel_sensitivity` keeps the Noise tab's ε on one channel at a time and counts how
often the last prediction flips; this view shows the most sensitive channels as bars and a
table, and the whole ranking as files. It reads the tab's model, component, prompt and target,
so a layer and level picked off the sweep's curves can be opened here. Its size, channels ×
trials noisy runs, is capped (`limits.check_channels`) before any compute. The ranking runs in a
worker thread (`jobs.run`) reporting runs done; Stop keeps the channels ranked so far.
"""
from __future__ import annotations

import gradio as gr
import pandas as pd

from compare import channel_sensitivity
from compare.figures import noise as noise_figures
from compare.handle import points
from compare.analyses.channels import feature_axes, feature_shape
from compare.analyses.signatures import CHANNEL_SENSITIVITY

from . import downloads, jobs, limits, models

TOP = 20
"""Channels shown per axis, in the bars and the table (the files hold all of them)."""
VIEW = "channels"


def n_channels(handle, component: str) -> int:
    """Rows of the ranking: one per channel, plus one per state index on Mamba's SSM points."""
    return sum(feature_shape(handle, component))


def top_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The `TOP` most sensitive channels of each axis, means rounded for reading."""
    return df[df["rank"] <= TOP].round({"flip_rate": 3, "p_target": 4, "logit_diff": 3})


def stopped_note(df: pd.DataFrame, axes: dict[str, int]) -> str:
    """'**Stopped**: ranked 128 of 1536 d_in indices and 0 of 16 n indices; …' (what each axis
    finished); axes: {glossary letter: size} (`channels.feature_axes`)."""
    done = df.groupby("axis").size() if len(df) else pd.Series(dtype=int)
    parts = [f"{int(done.get(axis, 0))} of {size} {axis} indices" for axis, size in axes.items()]
    return f"**Stopped**: ranked {' and '.join(parts)}; the bars, table and files hold those only."


@limits.shown_to_user
def run(model_name, prompt, target, component, layer, level, trials, seed, request: gr.Request = None,
        progress=gr.Progress()):
    """Stream (note, bars, top rows, CSV + Parquet of the ranking) for one layer at one level.

    model_name: a configured model ("mamba", "gpt2") or any source (`models.load`).
    """
    model = models.load(model_name)
    prompt, target = limits.check_prompt(prompt, [model]), limits.token(target)
    layer, level = limits.number(layer, "layer"), limits.number(level, "level", float)
    trials, seed = limits.number(trials, "trials"), limits.number(seed, "seed")
    points.check(model, component, layer)
    size = n_channels(model, component)
    limits.check_channels(size, trials)
    desc = f"{size} channels × {trials} trials"
    progress((0, size * trials), desc=desc, unit="run")
    df = yield from jobs.run(
        lambda progress, stop: channel_sensitivity(prompt, model=model, target=target, component=component,
                                                   layer=layer, level=level, trials=trials, seed=seed,
                                                   progress=progress, stop=stop),  # the signature's scale
        tick=jobs.skips(4), key=jobs.session_key(request, VIEW),
        on_progress=lambda done, total: progress((done, total), desc=desc, unit="run"))
    note = stopped_note(df, feature_axes(model, component)) if df.attrs.get("stopped") else ""
    if df.empty:
        yield note, None, None, None
        return
    stem = "channel_sensitivity_partial" if df.attrs.get("stopped") else "channel_sensitivity"
    files = downloads.table_files(downloads.new_directory(), df, stem)
    yield note, noise_figures.channel_bars(df, top=TOP), top_rows(df), files


def build(model_name: gr.Dropdown, prompt: gr.Textbox, target: gr.Textbox, component: gr.Dropdown, heavy: dict) -> None:
    """The accordion; call inside the Noise tab with its model, prompt, target and component inputs."""
    with gr.Accordion("Channel sensitivity", open=False, elem_id="channels"):
        gr.Markdown("Noise on one channel at a time (model, component, prompt and target from above; "
                    f"{CHANNEL_SENSITIVITY['scale'].default} scale): a channel's flip rate is the fraction of trials "
                    "whose last prediction changes. Mamba's SSM points are ranked by channel and by state index. "
                    f"Capped at {limits.LIMITS.channel_runs} noisy runs (channels × trials).")
        with gr.Row():
            layer = gr.Number(0, label="Layer", precision=0, elem_id="channels-layer")
            level = gr.Number(1.0, label="Level", elem_id="channels-level")
            trials = gr.Number(2, label="Trials", precision=0, elem_id="channels-trials")
            seed = gr.Number(CHANNEL_SENSITIVITY["seed"].default, label="Seed", precision=0, elem_id="channels-seed")
            button = gr.Button("Rank channels", variant="primary", elem_id="channels-run")
            stop = gr.Button("Stop", variant="stop", elem_id="channels-stop")
        note = gr.Markdown(elem_id="channels-note")
        bars = gr.Plot(show_label=False, elem_id="channels-bars")
        table = gr.Dataframe(label=f"Top {TOP} per axis", elem_id="channels-table",
                             headers=["no ranking yet: click Rank channels"])
        results = gr.File(label="Download the full ranking (CSV, Parquet)", file_count="multiple",
                          elem_id="channels-files")
        button.click(jobs.submitted(VIEW), None, None, concurrency_limit=None)  # counts it as waiting
        button.click(jobs.queued(VIEW, run),
                     inputs=[model_name, prompt, target, component, layer, level, trials, seed],
                     outputs=[note, bars, table, results], **heavy)
        # Stop does not cancel the event: the ranking returns the channels it finished.
        stop.click(jobs.stop_handler(VIEW, "channel ranking"), None, None, concurrency_limit=None)
