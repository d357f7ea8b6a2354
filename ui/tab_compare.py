"""Compare tab: one prompt through both models; per-position predictions and P, L/K/P plots.

All numbers come from `compare.compare`; this module only validates input, lays the result out
side by side and offers it as files. The `Comparison` goes into the session's `gr.State`, where
the Distributions tab reads it.
"""
from __future__ import annotations

import gradio as gr
import pandas as pd

from compare import compare, figures

from . import downloads, limits, models
from .tab_tokenizers import visible

VARIANTS = ("aligned", "native", "same_ids")
TRACK_SEPARATOR = "|"
EXAMPLES = [  # one per prompt suite: prompt, variant, tracked tokens
    ["When Mary and John went to the store, John gave a drink to", "aligned", " Mary| John"],
    [" the" * 14, "aligned", " the"],
    [" cat dog" * 7, "aligned", " cat| dog"],
    [" red green blue one two three" * 2, "aligned", " red"],
]
EXAMPLE_LABELS = ["natural (IOI)", "monotone", "periodic", "repeated random"]


def tracked_tokens(track: str | None) -> list[str] | None:
    """'| Mary| John' style input → [" Mary", " John"]; spaces are kept (they are part of tokens)."""
    tokens = [t for t in (track or "").split(TRACK_SEPARATOR) if t.strip()]
    return tokens or None


def side_by_side(comparison) -> pd.DataFrame:
    """One row per position of the first model: each model's token, prediction and its P.

    Other models are joined at their paired position (`Comparison.cross`), so under the aligned
    variant a split token lines up with the piece whose prediction is of the same next token.
    """
    frame = comparison.to_frame()
    names = list(comparison.runs)
    first = frame[frame["model"] == names[0]].set_index("position")
    table = pd.DataFrame({"position": first.index})
    table[f"{names[0]} token"] = first["token"].map(visible).to_numpy()
    table[f"{names[0]} prediction"] = first["prediction"].map(visible).to_numpy()
    table[f"{names[0]} P"] = first["p_prediction"].astype(float).round(4).to_numpy()
    for name in names[1:]:
        pairs = comparison.cross[comparison.cross["other"] == name][["position", "other_position", "agree"]]
        own = frame[frame["model"] == name].set_index("position")
        joined = pairs.join(own[["token", "prediction", "p_prediction"]], on="other_position")
        joined = table[["position"]].merge(joined, on="position", how="left")
        table[f"{name} token"] = joined["token"].map(visible, na_action="ignore").to_numpy()
        table[f"{name} prediction"] = joined["prediction"].map(visible, na_action="ignore").to_numpy()
        table[f"{name} P"] = joined["p_prediction"].astype(float).round(4).to_numpy()
        table[f"agree ({name})"] = joined["agree"].to_numpy()
    return table


def files(comparison, table: pd.DataFrame) -> list[str]:
    """The comparison as `Comparison.save` writes it (Parquet, JSON, PNGs) plus the table as CSV."""
    directory = comparison.save(downloads.new_directory() / "comparison")
    table.to_csv(directory / "table.csv", index=False)
    return sorted(str(p) for p in directory.rglob("*") if p.is_file())


@limits.shown_to_user
def run(prompt: str, variant: str, track: str, progress=gr.Progress()):
    """Table, trajectory plot, cross-model plot, files, and the Comparison for the session state."""
    progress(0.0, desc="loading models")
    prompt = limits.check_prompt(prompt)
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    progress(0.2, desc="running both models")
    comparison = compare(prompt, models.pair(), variant=variant, track=tracked_tokens(track),
                         progress=False)
    progress(0.7, desc="tables and figures")
    table = side_by_side(comparison)
    tracked = comparison.tracked_frame()
    trajectories = figures.trajectories(tracked) if len(tracked) else None
    cross = figures.cross_model(comparison.cross) if len(comparison.cross) else None
    return table, trajectories, cross, files(comparison, table), comparison


def run_example(prompt: str, variant: str, track: str):
    """`run` without the state output: cached examples are shared by all sessions."""
    return run(prompt, variant, track)[:-1]


def build(comparison: gr.State) -> None:
    with gr.Tab("Compare", id="compare"):
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", lines=2, scale=4, elem_id="cmp-prompt")
            with gr.Column(scale=1):
                variant = gr.Radio(list(VARIANTS), value="aligned", label="Variant", elem_id="cmp-variant",
                                   info="aligned: both read the first model's tokens' text; native: each "
                                        "tokenises; same_ids: identical IDs")
                track = gr.Textbox(label=f"Tracked tokens (separate with {TRACK_SEPARATOR})",
                                   placeholder=" Mary| John", elem_id="cmp-track")
        with gr.Row():
            button = gr.Button("Compare", variant="primary", elem_id="cmp-run")
            stop = gr.Button("Stop", variant="stop", elem_id="cmp-stop")
        table = gr.Dataframe(label="Per position: predictions and P", elem_id="cmp-table", wrap=True)
        with gr.Row():
            trajectories = gr.Plot(label="L / K / P of tracked tokens", elem_id="cmp-trajectories")
            cross = gr.Plot(label="Cross-model: JS divergence and agreement", elem_id="cmp-cross")
        results = gr.File(label="Download (Parquet, CSV, PNG, JSON)", file_count="multiple", elem_id="cmp-files")
        outputs = [table, trajectories, cross, results]
        gr.Examples(EXAMPLES, inputs=[prompt, variant, track], outputs=outputs, fn=run_example,
                    example_labels=EXAMPLE_LABELS, cache_examples=True, cache_mode="lazy",
                    label="One example per prompt suite")
        event = button.click(run, inputs=[prompt, variant, track], outputs=outputs + [comparison])
        stop.click(None, cancels=[event])
