"""Datasets tab: build prompt suites with `datasets_gen.build`, preview rows, download Parquet.

The suites are built with the tokenizers of the models the app serves, so a downloaded split
holds exactly the IDs the other tabs feed them. The suites are built one at a time in a worker
thread (`jobs.run`), with progress per suite; Stop ends the build between two suites, and those
built are previewed and offered.
"""
from __future__ import annotations

import functools

import gradio as gr
import pandas as pd
from datasets import DatasetDict

import datasets_gen

from . import downloads, jobs, limits, models

PREVIEW_ROWS = 20
VIEW = "datasets"


def preview(dataset: DatasetDict) -> pd.DataFrame:
    """The first rows of every split, every column; lists shown joined by "|" (the table shows text)."""
    frames = [dataset[split].select(range(min(PREVIEW_ROWS, len(dataset[split])))).to_pandas()
              for split in dataset]
    frame = pd.concat(frames, ignore_index=True)
    for column in frame.columns:
        if frame[column].map(lambda v: hasattr(v, "__len__") and not isinstance(v, str)).any():
            frame[column] = frame[column].map(_shown)
    return frame


def _shown(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_shown(v)}" for k, v in value.items())
    if hasattr(value, "__len__") and not isinstance(value, str):
        return "|".join(_shown(v) for v in value)
    return str(value)


def built(suites: list[str], size: int, seed: int, progress, stop) -> DatasetDict:
    """The splits of `suites` with the served models' tokenizers, one suite at a time; once `stop`
    is set, those built so far. progress(done, total) after each suite."""
    tokenizers = {role: models.get(role).tokenizer for role in models.MODELS}
    splits = {}
    for done, suite in enumerate(suites, 1):
        if stop.is_set():
            break
        splits.update(datasets_gen.build(seed=seed, suites=[suite], sizes={suite: size}, tokenizers=tokenizers))
        progress(done, len(suites))
    return DatasetDict(splits)


@limits.shown_to_user
def run(suites: list[str], size: float, seed: float, request: gr.Request = None, progress=gr.Progress()):
    """Stream: nothing while the suites build, then their preview and Parquet files; after Stop,
    those of the suites built before it (a toast says how many)."""
    if not suites:
        raise limits.InputError(f"suites: pick at least one of {list(datasets_gen.DEFAULT_SUITES)}")
    size, seed = limits.number(size, "prompts per suite"), limits.number(seed, "seed")
    limits.check_suite_size(size)
    progress((0, len(suites)), desc="building suites", unit="suite")
    dataset = yield from jobs.run(
        functools.partial(built, suites, size, seed), tick=jobs.skips(2), key=jobs.session_key(request, VIEW),
        on_progress=lambda done, total: progress((done, total), desc="building suites", unit="suite"))
    if len(dataset) < len(suites):
        gr.Info(f"Stopped after {len(dataset)} of {len(suites)} suites"
                + (f": the preview and the files hold {', '.join(dataset)}." if len(dataset) else ": nothing built."))
    if not len(dataset):
        yield None, None
        return
    paths = datasets_gen.write_parquet(dataset, downloads.new_directory())
    yield preview(dataset), [str(p) for p in paths]


def build(heavy: dict) -> None:
    with gr.Tab("Datasets", id="datasets"):
        gr.Markdown("Build reproducible prompt suites (one split each) with the served models' tokenizers. "
                    "Each row stores the seed and config that regenerate it.")
        with gr.Row():
            suites = gr.CheckboxGroup(list(datasets_gen.DEFAULT_SUITES), value=["monotone", "periodic"],
                                      label="Suites", elem_id="ds-suites")
            size = gr.Number(4, label=f"Prompts per suite (≤ {limits.LIMITS.suite_prompts})", precision=0,
                             elem_id="ds-size")
            seed = gr.Number(0, label="Seed", precision=0, elem_id="ds-seed")
        with gr.Row():
            button = gr.Button("Build", variant="primary", elem_id="ds-run")
            stop = gr.Button("Stop", variant="stop", elem_id="ds-stop")
        table = gr.Dataframe(label=f"Preview (first {PREVIEW_ROWS} rows per suite)", elem_id="ds-preview", wrap=True,
                             headers=["no suite yet: build one"])
        files = gr.File(label="Download Parquet (one file per suite)", file_count="multiple", elem_id="ds-files")
        button.click(jobs.submitted(VIEW), None, None, concurrency_limit=None)  # counts it as waiting
        button.click(jobs.queued(VIEW, run),
                     inputs=[suites, size, seed], outputs=[table, files], **heavy)
        stop.click(jobs.stop_handler(VIEW, "dataset build"), None, None, concurrency_limit=None)
