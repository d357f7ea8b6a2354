"""Tokenizers tab: side-by-side tokenisation of any text, and token ID vs token length, for the
two or three models picked on the tab (the configured pair by default).

The study found that token ID and decoded length are correlated differently in GPT-2's and
GPT-NeoX's vocabularies; `compare.tokenizer_stats` measures it (Pearson r, linear and log ID),
over the tokens of the text and over the whole vocabulary.
"""
from __future__ import annotations

import gradio as gr
import pandas as pd

from compare.figures import base as figures
from compare.measures import metrics
from compare import tokenizer_stats
from compare.handle.vocabularies import byte_text

from . import examples, limits, models

EXAMPLES = ["When Mary and John went to the store, John gave a drink to",
            "123123123123 1 2 3\n\n    indented\tand tabbed",
            "Mamba is a selective state-space model; GPT-2 is a transformer."]


def visible(token: str) -> str:
    """A token's text with its whitespace made visible (the bump tokens are often whitespace)."""
    return token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")


def token_text(model, token_id: int, text: str | None = None) -> str:
    """The token's text (`vocabularies.byte_text`: a piece of a character as its bytes), made `visible`.

    text: the token's decoded text when the caller has it (`model.decode_tokens([token_id])[0]`).
    """
    return visible(byte_text(model.tokenizer, token_id, text))


def token_spans(model, text: str) -> list[tuple[int, int, int]]:
    """(id, start, end) per token: the characters of `text` each token covers (the fast tokenizer's offsets)."""
    encoding = model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [(i, start, end) for i, (start, end) in zip(encoding["input_ids"], encoding["offset_mapping"])]


def tokenize(text: str, handles=None) -> pd.DataFrame:
    """One row per span of text that all tokenizers cut at its ends, each model's tokens and IDs in it.

    A span ends where every tokenization has a token ending at the same character, so a word one
    tokenizer splits and the other keeps whole is one row: the pieces side by side with the whole.
    handles: the models picked on the tab; None: the configured pair.
    """
    limits.check_text(text, "text")
    handles = handles or models.pair()
    spans = {model.name: (model, token_spans(model, text)) for model in handles}
    ends = set.intersection(*({end for _, _, end in tokens} for _, tokens in spans.values()))
    cuts = sorted(ends | {len(text)})
    rows, start = [], 0
    for cut in cuts:
        row = {"text": visible(text[start:cut])}
        for name, (model, tokens) in spans.items():
            inside = [(i, s, e) for i, s, e in tokens if start < e <= cut or (s == e == cut)]
            row[f"{name} tokens"] = " ".join(token_text(model, i) for i, _, _ in inside)
            row[f"{name} ids"] = " ".join(str(i) for i, _, _ in inside)
        if row["text"] or any(row[f"{name} ids"] for name in spans):
            rows.append(row)
        start = cut
    frame = pd.DataFrame(rows, columns=["text"] + [f"{n} {c}" for n in spans for c in ("tokens", "ids")])
    frame.insert(0, "span", range(len(frame)))
    return frame


_vocab_tables: dict[int, pd.DataFrame] = {}


def vocab_tables(handles=None) -> dict[str, pd.DataFrame]:
    """Each model's ID, token and length over its whole vocabulary (`metrics.token_lengths`)."""
    tables = {}
    for model in handles or models.pair():
        # ~50k decodes, the same answer for every session: once per loaded tokenizer (cached models live on)
        key = id(model.tokenizer)
        if key not in _vocab_tables:
            _vocab_tables[key] = metrics.token_lengths(model.tokenizer)
        tables[model.name] = _vocab_tables[key]
    return tables


def stats(text: str | None, handles=None) -> pd.DataFrame:
    """`compare.tokenizer_stats` per model: over the text (when given) and the whole vocabulary."""
    handles = handles or models.pair()
    rows = []
    for model, (name, table) in zip(handles, vocab_tables(handles).items()):
        if text and text.strip():
            rows.append({"model": name, "over": "text", **tokenizer_stats(model.tokenizer, text=text)})
        rows.append({"model": name, "over": "vocabulary", **metrics.length_correlations(table),
                     "n_tokens": len(table), "n_vocab": len(model.tokenizer)})
    return pd.DataFrame(rows)


@limits.shown_to_user
def run(text: str, chosen: list[str] | None = None):
    """Tokens side by side (one row per shared span of text), the correlation table, the vocabulary scatter.

    chosen: the models picked on the tab (`models.chosen`); None or empty: the configured pair."""
    limits.check_text(text, "text")
    handles = models.chosen(chosen)
    return tokenize(text, handles), stats(text, handles), figures.tokenizer_scatter(vocab_tables(handles))


def build(heavy: dict) -> None:
    with gr.Tab("Tokenizers", id="tokenizers"):
        gr.Markdown("Type any text to see how each model's tokenizer splits it, with the IDs. "
                    "The statistics are Pearson correlations between token ID (and log ID) and "
                    "the decoded token's length.")
        from .tab_compare import model_picker  # tab_compare imports this module's `visible`

        chosen = model_picker("tok-models")
        text = gr.Textbox(label="Text", lines=3, elem_id="tok-text")
        button = gr.Button("Tokenize", variant="primary", elem_id="tok-run")
        table = gr.Dataframe(label="Tokens side by side, one row per span of text both tokenizers cut at "
                                   "its ends (␣ space, ↵ newline, ⇥ tab)", elem_id="tok-table", wrap=True,
                             headers=["no text yet: click Tokenize or an example"])
        stats_table = gr.Dataframe(label="ID vs length", elem_id="tok-stats", headers=["no text yet"])
        plot = gr.Plot(show_label=False, elem_id="tok-plot")
        examples.cached(EXAMPLES, inputs=text, outputs=[table, stats_table, plot], fn=run)
        # the first call tabulates each whole vocabulary: CPU work like a forward
        button.click(run, inputs=[text, chosen], outputs=[table, stats_table, plot], **heavy)
