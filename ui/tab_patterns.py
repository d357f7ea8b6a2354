"""Patterns tab: monotone and periodic prompts built from IDs or text, and when each model locks in.

The models are picked as on the Compare tab (`models.chosen`; default the configured pair). The
pattern is defined in the first model's tokenizer (Mamba's by default, as in `datasets_gen`'s
suites); `compare.analyses.align` previews what each other model reads under the aligned variant, flagging
tokens with no single-token counterpart. Lock-in (the first position after which the argmax always
continues the pattern) is `compare.compare`'s. The models load and run in a worker thread (`jobs.run`);
Stop sets its stop, and a stopped comparison (computed whole) shows nothing but a note.
"""
from __future__ import annotations

import gradio as gr
import pandas as pd

import numpy as np

from compare import Stopped, compare
from compare.figures import base as figures
from compare.measures import metrics
from compare.analyses.align import align
from datasets_gen.suites import repeat

from . import jobs, limits, models
from .tab_compare import model_picker, shown, side_by_side
from .tab_tokenizers import visible

KINDS = ("periodic", "monotone")
SOURCES = ("ids", "text")
VIEW = "patterns"
N_OUTPUTS = 4
"""What `run` updates: the aligned preview, lock-in, the plot, the per-position table."""


def cycle_ids(kind: str, source: str, spec: str, model) -> list[int]:
    """The repeating unit in `model`'s tokenizer: "42, 69" as IDs, or the tokens of a text."""
    if kind not in KINDS or source not in SOURCES:
        raise ValueError(f"pattern must be one of {KINDS} from one of {SOURCES}, got {kind!r} from {source!r}")
    if source == "ids":
        try:
            ids = [int(x) for x in (spec or "").replace(",", " ").split()]
        except ValueError:
            raise limits.InputError(f"IDs: {spec!r} is not a list of integers like '42, 69'") from None
        if not ids:
            raise limits.InputError("IDs: empty; give the pattern's token IDs, like '42, 69'")
    else:
        ids = model.encode(limits.check_text(spec, "pattern text"))
    if kind == "monotone" and len(ids) != 1:
        raise limits.InputError(f"a monotone pattern repeats one token; {spec!r} is {len(ids)} tokens")
    if kind == "periodic" and len(ids) < 2:
        raise limits.InputError(f"a periodic pattern needs a cycle of at least 2 tokens; {spec!r} is {len(ids)}")
    model.as_input(ids)  # out-of-vocabulary IDs are refused here, with the allowed range
    return ids


def pattern(cycle: list[int], length: int) -> list[int]:
    limits.check_tokens(length, "the pattern", "length")
    if length < len(cycle):
        raise limits.InputError(f"length {length} is shorter than the cycle ({len(cycle)} tokens)")
    return repeat(cycle, length)


def preview(ids: list[int], handles) -> pd.DataFrame:
    """Per token of the first model: its ID and text, and the pieces each other model reads under
    the aligned variant; `flagged`: a token that some model reads with no single-token counterpart."""
    first, *others = handles
    columns = {"position": range(len(ids)), f"{first.name} id": ids,
               f"{first.name} token": [visible(t) for t in first.decode_tokens(ids)]}
    flagged = np.zeros(len(ids), dtype=bool)
    for other in others:
        aligned = align(ids, first.tokenizer, other.tokenizer)
        columns[f"{other.name} aligned ids"] = [" ".join(map(str, p)) for p in aligned.pieces]
        columns[f"{other.name} tokens"] = [" ".join(visible(t) for t in other.decode_tokens(p)) for p in aligned.pieces]
        flagged |= np.asarray(aligned.flags, dtype=bool)
    return pd.DataFrame({**columns, "flagged": flagged})


def next_token_frame(comparison) -> pd.DataFrame:
    """Per model and position: the input token and P of the token the pattern continues with.

    Each model's own IDs give its pattern (under the aligned variant GPT-2 may read more pieces);
    a model whose input is not periodic has no rows.
    """
    frames = []
    for name, run in comparison.runs.items():
        period = metrics.period(run.ids)
        if period is None:
            continue
        expected = metrics.continuation(run.ids, period)
        frames.append(pd.DataFrame({"model": name, "position": np.arange(len(run.ids)), "token": run.tokens,
                                    "P_next": run.probs[np.arange(len(run.ids)), expected]}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["model", "position", "token", "P_next"])


def compared(kind: str, source: str, spec: str, length: int, chosen: list[str] | None, stop):
    """The pattern's IDs, the models (`models.chosen`, loaded here for the first one's tokenizer),
    and the pattern's `compare.compare` by them."""
    handles = models.chosen(chosen)
    ids = pattern(cycle_ids(kind, source, spec, handles[0]), length)
    return ids, handles, compare(ids, handles, variant="aligned", progress=False, stop=stop)


@limits.shown_to_user
def run(kind: str, source: str, spec: str, length: float, chosen: list[str] | None = None,
        request: gr.Request = None, progress=gr.Progress()):
    """Stream: nothing while the models load and run, then the aligned preview, lock-in per model,
    P of the next pattern token plot, and the per-position table; after Stop, empty outputs and a note.

    chosen: the models' names (`models.chosen`); None or empty: the configured pair."""
    length = limits.number(length, "length")
    progress(0.0, desc="loading and running the models")
    try:
        ids, handles, comparison = yield from jobs.run(
            lambda progress, stop: compared(kind, source, spec, length, chosen, stop),
            tick=jobs.skips(N_OUTPUTS), key=jobs.session_key(request, VIEW))
    except Stopped:
        gr.Info("Stopped before the models finished: nothing to show (a comparison is computed whole).")
        yield (None,) * N_OUTPUTS
        return
    lock_in = pd.DataFrame([{"model": name, "lock-in position": run.lock_in,
                             "locked in": run.lock_in is not None} for name, run in comparison.runs.items()])
    frame = next_token_frame(comparison)
    plot = (figures.pattern_lock_in(frame, lock_in={n: r.lock_in for n, r in comparison.runs.items()})
            if len(frame) else None)
    yield preview(ids, handles), lock_in, plot, shown(side_by_side(comparison, handles))


def build(heavy: dict) -> None:
    with gr.Tab("Patterns", id="patterns"):
        gr.Markdown("Build a monotone (one token repeated) or periodic (a cycle repeated) prompt in the "
                    "first model's tokenizer (Mamba's by default), by IDs or by text. The preview shows what "
                    "the other models read under the aligned variant; *lock-in* is the first position after "
                    "which a model's prediction always continues the pattern (empty: never).")
        chosen = model_picker("pat-models")
        with gr.Row():
            kind = gr.Radio(list(KINDS), value="periodic", label="Pattern", elem_id="pat-kind")
            source = gr.Radio(list(SOURCES), value="ids", label="Given as", elem_id="pat-source")
            spec = gr.Textbox("42, 69", label="Cycle (IDs '42, 69' or text)", elem_id="pat-spec")
            length = gr.Number(14, label="Length (tokens)", precision=0, elem_id="pat-length")
        with gr.Row():
            button = gr.Button("Build and compare", variant="primary", elem_id="pat-run")
            stop = gr.Button("Stop", variant="stop", elem_id="pat-stop")
        table = gr.Dataframe(label="Aligned variant, every tokenizer", elem_id="pat-preview", wrap=True,
                             headers=["no pattern yet: build one"])
        lock_in = gr.Dataframe(label="Lock-in", elem_id="pat-lockin", headers=["no pattern yet"])
        plot = gr.Plot(show_label=False, elem_id="pat-plot")
        predictions = gr.Dataframe(label="Per position: predictions and P", elem_id="pat-table", wrap=True,
                                   headers=["no pattern yet"])
        button.click(jobs.submitted(VIEW), None, None, concurrency_limit=None)  # counts it as waiting
        button.click(jobs.queued(VIEW, run),
                     inputs=[kind, source, spec, length, chosen], outputs=[table, lock_in, plot, predictions],
                     **heavy)
        stop.click(jobs.stop_handler(VIEW, "comparison"), None, None, concurrency_limit=None)
