"""Compare tab: one prompt through two or three models; per-position predictions and P, L/K/P plots.

The models are picked by name (`models.chosen`): the configured pair by default, or any two or
three of the aliases (Mamba, GPT-2, Pythia sizes), Hub ids or local directories; the first is the
reference. A line under the table says which models read the first one's tokenizer.

All numbers come from `compare.compare`; this module only validates input, lays the result out
side by side. The `Comparison` goes into the session's `gr.State`, where the Distributions tab
reads it. The two figures the tab shows are Vega-Lite specifications (`compare.figures.vega`) that
the browser draws: the matplotlib figures cost several times the forward passes of a small pair
in layout, drawing and encoding. The files (`Comparison.save`'s Parquet, JSON and every figure as
PNG, plus the table) are written when asked for ("Prepare downloads"), without the store's marker
dotfile (Gradio refuses to serve dotfiles). The models load and run in a worker thread
(`jobs.run`); Stop sets its stop, and as a comparison is computed whole, a stopped one shows
nothing but a note.
"""
from __future__ import annotations

import functools
import json

import gradio as gr
import numpy as np
import pandas as pd
from gradio.components.plot import PlotData

from compare import Stopped, compare
from compare.figures import vega
from compare.base.store import MARKER
from compare.handle.vocabularies import byte_text
from compare.analyses.signatures import COMPARE

from . import downloads, examples, jobs, limits, models
from .tab_tokenizers import token_text

TRACK_SEPARATOR = "|"
EXAMPLES = [  # one per prompt suite: prompt, variant, tracked tokens
    ["When Mary and John went to the store, John gave a drink to", "aligned", " Mary| John"],
    [" the" * 14, "aligned", " the"],
    [" cat dog" * 7, "aligned", " cat| dog"],
    [" red green blue one two three" * 2, "aligned", " red"],
]
EXAMPLE_LABELS = ["natural (IOI)", "monotone", "periodic", "repeated random"]
PROMPT, TRACK = EXAMPLES[0][0], EXAMPLES[0][2]
N_OUTPUTS = 6
"""What `run` updates: table, trajectories, cross plot, files (cleared), summary, the Comparison."""
VIEW = "compare"
STOPPED = "**Stopped**: nothing to show (a comparison is computed whole)."
K_SCALES = ("auto", "linear", "symlog", "log")
"""The K axis of the trajectories (`vega.trajectories`' k_scale): auto is symlog when K spans orders of magnitude."""


def browser_plot(spec: dict) -> PlotData:
    """A Vega-Lite specification as `gr.Plot` sends an Altair chart: the page draws it (vega-embed)."""
    return PlotData(type="altair", plot=json.dumps(spec, allow_nan=False))


def input_tokens(comparison, handles) -> dict[str, list[str]]:
    """Each model's input tokens as labels: pieces of a UTF-8 character as their bytes (`byte_text`)
    where `handles` has the model, else as decoded."""
    model = {handle.name: handle for handle in handles}
    return {name: [byte_text(model[name].tokenizer, int(i), t) if name in model else t
                   for i, t in zip(run.ids, run.tokens)]
            for name, run in comparison.runs.items()}


def trajectory_figure(comparison, handles, k_axis: str | None = "auto") -> PlotData | None:
    """L/K/P of the tracked tokens, x-axes labelled with each model's input tokens; None when none tracked."""
    tracked = comparison.tracked_frame()
    if not len(tracked):
        return None
    return browser_plot(vega.trajectories(tracked, k_scale=k_axis or "auto", tokens=input_tokens(comparison, handles)))


def tracked_tokens(track: str | None) -> list[str] | None:
    """'| Mary| John' style input → [" Mary", " John"]; spaces are kept (they are part of tokens)."""
    tokens = [t for t in (track or "").split(TRACK_SEPARATOR) if t.strip()]
    return tokens or None


def side_by_side(comparison, handles) -> pd.DataFrame:
    """One row per position of the first model: each model's token, prediction and its P.

    Other models are joined at their paired position (`Comparison.cross`), so under the aligned
    variant a split token lines up with the piece whose prediction is of the same next token; a
    position without a pair reads NaN. handles: the compared models (by name), which write the
    tokens that are pieces of a UTF-8 character as their bytes (`token_text`), not as "�".
    """
    model = {handle.name: handle for handle in handles}
    first, *others = comparison.runs.values()
    table = pd.DataFrame({"position": np.arange(len(first.ids))})
    for run in (first, *others):
        tokens = readable(model[run.model], run.ids, run.tokens)
        predictions = readable(model[run.model], run.prediction_ids, run.predictions)
        if run is first:
            at = agree = None
            table[f"{run.model} token"], table[f"{run.model} prediction"] = tokens, predictions
            table[f"{run.model} P"] = run.p_predictions.astype(float)
            continue
        pairs = comparison.cross[comparison.cross["other"] == run.model]
        at = dict(zip(pairs["position"].tolist(), pairs["other_position"].tolist()))
        agree = dict(zip(pairs["position"].tolist(), pairs["agree"].tolist()))
        paired = [at.get(t) for t in table["position"]]
        table[f"{run.model} token"] = [np.nan if o is None else tokens[o] for o in paired]
        table[f"{run.model} prediction"] = [np.nan if o is None else predictions[o] for o in paired]
        table[f"{run.model} P"] = [np.nan if o is None else float(run.p_predictions[o]) for o in paired]
        table[f"agree ({run.model})"] = [agree.get(t, np.nan) for t in table["position"]]
    return table


def readable(model, ids, texts) -> list[str]:
    """Each token's text as the table shows it (`token_text`), its tokenizer asked only for pieces of a character."""
    return [token_text(model, int(i), text) for i, text in zip(ids, texts)]


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """The table as displayed: P in scientific notation (a near-uniform P is ~1/V, 2.0e-05, not 0.0000)."""
    table = table.copy()
    for column in table.columns:
        if column.endswith(" P"):
            table[column] = table[column].map(lambda p: "" if pd.isna(p) else f"{p:.2e}")
    return table


def files(comparison, handles) -> list[str]:
    """The comparison as `Comparison.save` writes it (Parquet, JSON, PNGs) plus the table as CSV;
    never the store's marker (a dotfile: Gradio refuses to serve it, and it is no result)."""
    directory = comparison.save(downloads.new_directory() / "comparison")
    side_by_side(comparison, handles).to_csv(directory / "table.csv", index=False)
    return sorted(str(p) for p in directory.rglob("*") if p.is_file() and p.name != MARKER)


def is_of(comparison, prompt: str | None, variant: str, handles) -> bool:
    """Whether `comparison` is of this prompt, variant and models (what the tab's inputs say now)."""
    return (comparison is not None and comparison.prompt == prompt and comparison.variant == variant
            and list(comparison.runs) == [h.name for h in handles])


@limits.shown_to_user
def prepare_downloads(comparison, prompt: str, variant: str, track: str, chosen: list[str] | None = None,
                      k_columns: str = "vocab"):
    """The files of the comparison the tab shows, written now (not at every click of Compare): the
    session's latest when it is of the tab's inputs, else computed (a cached example shows results
    without leaving a Comparison in the session)."""
    handles = models.chosen(chosen)
    if not (is_of(comparison, prompt, variant, handles) and comparison.k_columns == k_columns):
        prompt = check(prompt, variant, handles)
        comparison = compare(prompt, handles, variant=variant, track=tracked_tokens(track), progress=False,
                             k_columns=k_columns)
    return files(comparison, handles)


def check(prompt: str, variant: str, handles) -> str:
    """The prompt, refused when empty or over the token cap of any of `handles` (the picked models)."""
    check_variant(variant)
    return limits.check_prompt(prompt, handles)


def check_variant(variant: str) -> None:
    COMPARE["variant"].validate(variant)


def results(comparison, handles, k_axis: str | None = "auto"):
    """Table (as shown), trajectory plot, cross-model plot, summary: what the Compare tab shows.
    handles: the compared models (`side_by_side`)."""
    table = side_by_side(comparison, handles)
    trajectories = trajectory_figure(comparison, handles, k_axis)
    cross = browser_plot(vega.cross_model(comparison.cross)) if len(comparison.cross) else None
    return shown(table), trajectories, cross, comparison.summary()


def measured(prompt: str, variant: str, track: str, k_axis: str, chosen: list[str] | None, k_columns: str,
             progress, stop):
    """The Comparison and its `results`, as a `jobs.run` work: progress(1, 2) once the models ran;
    `Stopped` once `stop` is set, up to the laid-out results."""
    # Loading here too: a Stop pressed while a model loads stops the comparison after it.
    handles = models.chosen(chosen)
    prompt = check(prompt, variant, handles)
    comparison = compare(prompt, handles, variant=variant, track=tracked_tokens(track),
                         progress=False, stop=stop, k_columns=k_columns)
    progress(1, 2)
    outputs = results(comparison, handles, k_axis)
    if stop.is_set():
        raise Stopped("compare stopped while its results were laid out")
    return comparison, outputs


@limits.shown_to_user
def run(prompt: str, variant: str, track: str, k_axis: str = "auto", chosen: list[str] | None = None,
        k_columns: str = "vocab", request: gr.Request = None, progress=gr.Progress()):
    """Stream: nothing while the models load and run and the results are laid out, then the outputs
    and the Comparison; after Stop, empty outputs and the `STOPPED` note (the session's Comparison
    stays the last finished one).

    chosen: the models' names (`models.chosen`); None or empty: the configured pair.
    k_columns: K's row mean over the real vocabulary ("vocab") or every LM-head row ("all", the thesis's).
    """
    prompt = limits.check_text(prompt)  # and its tokens, once the picked models have loaded
    check_variant(variant)
    progress(0.0, desc="loading and running the models")
    try:
        comparison, outputs = yield from jobs.run(
            functools.partial(measured, prompt, variant, track, k_axis, chosen, k_columns),
            tick=jobs.skips(N_OUTPUTS), key=jobs.session_key(request, VIEW),
            on_progress=lambda done, total: progress(0.7, desc="tables and figures"))
    except Stopped:
        yield None, None, None, None, STOPPED, gr.skip()
        return
    table, trajectories, cross, summary = outputs
    yield table, trajectories, cross, None, summary, comparison


@limits.shown_to_user
def redraw(comparison, k_axis: str, chosen: list[str] | None = None):
    """The trajectory plot of the session's latest comparison on another K axis (no forward);
    chosen: the tab's models, whose tokenizers label its byte pieces (`input_tokens`)."""
    return None if comparison is None else trajectory_figure(comparison, models.chosen(chosen), k_axis)


@limits.shown_to_user
def run_example(prompt: str, variant: str, track: str):
    """What the tab shows, without files or the state: cached examples are shared by all sessions."""
    handles = models.pair()
    prompt = check(prompt, variant, handles)
    return results(compare(prompt, handles, variant=variant, track=tracked_tokens(track), progress=False), handles)


def model_picker(elem_id: str) -> gr.Dropdown:
    """The Models dropdown of a tab that compares (its names go to `models.chosen`)."""
    return gr.Dropdown(models.choices(), value=list(models.MODELS), multiselect=True, max_choices=models.MAX_CHOSEN,
                       allow_custom_value=True, label="Models", elem_id=elem_id,
                       info="two or three: the configured pair, an alias (Mamba, GPT-2, Pythia sizes), "
                            "a Hub id or a local directory; the first is the reference")


def build(comparison: gr.State, heavy: dict) -> list[gr.components.Component]:
    """The tab; returns its inputs (prompt, variant, tracked tokens, models) for the Distributions tab."""
    with gr.Tab("Compare", id="compare"):
        chosen = model_picker("cmp-models")
        with gr.Row():
            prompt = gr.Textbox(PROMPT, label="Prompt", lines=2, scale=4, elem_id="cmp-prompt")
            with gr.Column(scale=1):
                variant = gr.Radio(list(COMPARE["variant"].choices), value=COMPARE["variant"].default, label="Variant",
                                   elem_id="cmp-variant",
                                   info="aligned: both read the first model's tokens' text; native: each "
                                        "tokenises; same_ids: identical IDs")
                track = gr.Textbox(TRACK, label=f"Tracked tokens (separate with {TRACK_SEPARATOR})",
                                   placeholder=" Mary| John", elem_id="cmp-track")
                k_axis = gr.Radio(list(K_SCALES), value="auto", label="K axis", elem_id="cmp-k-axis",
                                  info="auto: symlog when K spans orders of magnitude")
                k_columns = gr.Radio(list(COMPARE["k_columns"].choices), value=COMPARE["k_columns"].default,
                                     label="K columns", elem_id="cmp-k-columns",
                                     info="K's row mean: the real vocabulary, or all LM-head rows (padding "
                                          "included, as the thesis)")
        with gr.Row():
            button = gr.Button("Compare", variant="primary", elem_id="cmp-run")
            stop = gr.Button("Stop", variant="stop", elem_id="cmp-stop")
            prepare = gr.Button("Prepare downloads", elem_id="cmp-prepare")
        table = gr.Dataframe(label="Per position: predictions and P", elem_id="cmp-table", wrap=True,
                             headers=["no comparison yet: click Compare or an example"])
        # The figures carry their own titles: a label above them would hide the title.
        trajectories = gr.Plot(show_label=False, elem_id="cmp-trajectories")
        cross = gr.Plot(show_label=False, elem_id="cmp-cross")
        results_files = gr.File(label="Download (Parquet, CSV, PNG, JSON: click Prepare downloads)",
                                file_count="multiple",
                                elem_id="cmp-files")
        summary = gr.Markdown(elem_id="cmp-summary")
        examples.cached(EXAMPLES, inputs=[prompt, variant, track], outputs=[table, trajectories, cross, summary],
                        fn=run_example, example_labels=EXAMPLE_LABELS, label="One example per prompt suite")
        button.click(jobs.submitted(VIEW), None, None, concurrency_limit=None)  # counts it as waiting
        button.click(jobs.queued(VIEW, run),
                     inputs=[prompt, variant, track, k_axis, chosen, k_columns],
                     outputs=[table, trajectories, cross, results_files, summary, comparison], **heavy)
        prepare.click(prepare_downloads, [comparison, prompt, variant, track, chosen, k_columns], results_files,
                      **heavy)
        k_axis.input(redraw, [comparison, k_axis, chosen], trajectories)
        stop.click(jobs.stop_handler(VIEW, "comparison"), None, None, concurrency_limit=None)
    return [prompt, variant, track, chosen]
