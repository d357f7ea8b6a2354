"""Report tab: `compare.thesis_report` on the app's two models — every experiment of the thesis beside what it claims.

The report runs in a worker thread (`jobs.run`) that reports each finished section; Stop sets its
stop, and a stopped report writes nothing (it is atomic). The finished page is shown inline, in a
sandboxed iframe (it is a whole self-contained HTML document, whose CSS must not reach the app), and
offered as files: the page, the numbers (report.json) and the whole folder as a zip.
"""
from __future__ import annotations

import html
import shutil

import gradio as gr

from compare import Stopped, thesis_report
from compare.reproduce.plan import FULL, QUICK

from . import downloads, jobs, limits, models

VIEW = "report"
SIZES = {"quick": QUICK, "full": FULL}
FULL_NOTE = "full: the thesis's sizes, several minutes on a small CPU"


def frame(page: str) -> str:
    """The report page inside a sandboxed iframe (no scripts; the page has none anyway)."""
    return (f'<iframe id="report-frame" sandbox="allow-same-origin" title="reproduction report" '
            f'style="width:100%;height:900px;border:1px solid #ccc" srcdoc="{html.escape(page, quote=True)}"></iframe>')


def plan_note(size: str) -> str:
    p = SIZES[size]
    layers = "all layers" if p.noise_layers is None else f"{p.noise_layers} layers"
    return (f"**{size}**: noise sweeps over {layers} × {p.noise_levels} levels × {p.noise_trials} trials, "
            f"periodic prompts of {p.periodic_length} tokens, {p.n_boot} bootstrap resamples.")


@limits.shown_to_user
def run(size, seed, request: gr.Request = None, progress=gr.Progress()):
    """Stream (note, page, files) of one report."""
    if size not in SIZES:
        raise limits.InputError(f"size: choose one of {', '.join(SIZES)}, got {size!r}")
    seed = limits.number(seed, "seed")
    if seed < 0:
        raise limits.InputError(f"seed must be ≥ 0, got {seed}")
    models.pair()  # loads both (a missing model is refused here, with the fix)
    sources = (models.source("mamba"), models.source("gpt2"))  # the cached handles, named by source in the header
    out = downloads.new_directory() / "report"
    yield f"Running the {size} report …", gr.skip(), gr.skip()
    progress((0, 1), desc="report", unit="step")
    try:
        path = yield from jobs.run(
            lambda progress, stop: thesis_report(out, models=sources, quick=size == "quick", seed=seed,
                                             progress=progress, stop=stop),
            tick=jobs.skips(3), key=jobs.session_key(request, VIEW),
            on_progress=lambda done, total: progress((done, total), desc="report", unit="step"))
    except Stopped:
        yield "**Stopped**: no report was written (a report is written whole or not at all).", None, None
        return
    archive = shutil.make_archive(str(path), "zip", root_dir=path)
    page = (path / "report.html").read_text(encoding="utf-8")
    yield (f"Done: the {size} report, seed {seed}.", frame(page),
           [str(path / "report.html"), str(path / "report.json"), archive])


def build(heavy: dict) -> None:
    with gr.Tab("Report", id="report"):
        gr.Markdown("Rerun every experiment of the 2024 thesis (Mamba-130m vs GPT-2) on the two models served, "
                    "beside what the thesis claims; errata are checked on the tokenizers. The page is one "
                    "self-contained file. Stop discards the report (nothing half-written is kept).")
        with gr.Row():
            size = gr.Radio(list(SIZES), value="quick", label="Size", info=FULL_NOTE, elem_id="report-size")
            seed = gr.Number(0, label="Seed", precision=0, elem_id="report-seed")
            button = gr.Button("Run report", variant="primary", elem_id="report-run")
            stop = gr.Button("Stop", variant="stop", elem_id="report-stop")
        sizes = gr.Markdown(plan_note("quick"), elem_id="report-plan")
        note = gr.Markdown(elem_id="report-note")
        view = gr.HTML(elem_id="report-view")
        files = gr.File(label="Download (page, numbers, whole folder)", file_count="multiple", elem_id="report-files")
        size.change(plan_note, size, sizes)
        button.click(jobs.submitted(VIEW), None, None, concurrency_limit=None)  # counts it as waiting
        button.click(jobs.queued(VIEW, run),
                     inputs=[size, seed], outputs=[note, view, files], **heavy)
        stop.click(jobs.stop_handler(VIEW, "report"), None, None, concurrency_limit=None)
