"""Tokenizers tab: side-by-side tokenisation of any text, and token ID vs token length.

The study found that token ID and decoded length are correlated differently in GPT-2's and
GPT-NeoX's vocabularies; `compare.tokenizer_stats` measures it (Pearson r, linear and log ID),
over the tokens of the text and over the whole vocabulary.
"""
from __future__ import annotations

import functools

import gradio as gr
import pandas as pd

from compare import figures, metrics, tokenizer_stats

from . import limits, models

EXAMPLES = ["When Mary and John went to the store, John gave a drink to",
            "123123123123 1 2 3\n\n    indented\tand tabbed",
            "Mamba is a selective state-space model; GPT-2 is a transformer."]


def visible(token: str) -> str:
    """A token's text with its whitespace made visible (the bump tokens are often whitespace)."""
    return token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")


def tokenize(text: str) -> pd.DataFrame:
    """One row per position: each model's token ID and text (blank where one model ran out)."""
    limits.check_text(text, "text")
    columns = {}
    for role in models.MODELS:
        model = models.get(role)
        ids = model.encode(text)
        columns[f"{role} id"] = pd.Series(ids, dtype="Int64")
        columns[f"{role} token"] = pd.Series([visible(t) for t in model.decode_tokens(ids)], dtype="string")
    frame = pd.DataFrame(columns)
    frame.insert(0, "position", range(len(frame)))
    return frame.fillna({c: "" for c in frame.columns if c.endswith("token")})


@functools.lru_cache(maxsize=4)
def _vocab_table(role: str, source: str) -> pd.DataFrame:
    # ~50k decodes, the same answer for every session: once per model source.
    return metrics.token_lengths(models.get(role).tokenizer)


def vocab_tables() -> dict[str, pd.DataFrame]:
    """Each model's ID, token and length over its whole vocabulary (`metrics.token_lengths`)."""
    return {role: _vocab_table(role, models.source(role)) for role in models.MODELS}


def stats(text: str | None) -> pd.DataFrame:
    """`compare.tokenizer_stats` per model: over the text (when given) and the whole vocabulary."""
    rows = []
    for role, table in vocab_tables().items():
        tokenizer = models.get(role).tokenizer
        if text and text.strip():
            rows.append({"model": role, "over": "text", **tokenizer_stats(tokenizer, text=text)})
        rows.append({"model": role, "over": "vocabulary", **metrics.length_correlations(table),
                     "n_tokens": len(table), "n_vocab": len(tokenizer)})
    return pd.DataFrame(rows)


@limits.shown_to_user
def run(text: str):
    """Tokens side by side, the correlation table and the vocabulary scatter."""
    return tokenize(text), stats(text), figures.tokenizer_scatter(vocab_tables())


def build() -> None:
    with gr.Tab("Tokenizers", id="tokenizers"):
        gr.Markdown("Type any text to see how each model's tokenizer splits it, with the IDs. "
                    "The statistics are Pearson correlations between token ID (and log ID) and "
                    "the decoded token's length.")
        text = gr.Textbox(label="Text", lines=3, elem_id="tok-text")
        button = gr.Button("Tokenize", variant="primary", elem_id="tok-run")
        table = gr.Dataframe(label="Tokens side by side", elem_id="tok-table", wrap=True)
        stats_table = gr.Dataframe(label="ID vs length", elem_id="tok-stats")
        plot = gr.Plot(label="Token ID vs decoded length", elem_id="tok-plot")
        gr.Examples(EXAMPLES, inputs=text, outputs=[table, stats_table, plot], fn=run,
                    cache_examples=True, cache_mode="lazy")
        button.click(run, inputs=text, outputs=[table, stats_table, plot])
