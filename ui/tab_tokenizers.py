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

from . import examples, limits, models

EXAMPLES = ["When Mary and John went to the store, John gave a drink to",
            "123123123123 1 2 3\n\n    indented\tand tabbed",
            "Mamba is a selective state-space model; GPT-2 is a transformer."]


def visible(token: str) -> str:
    """A token's text with its whitespace made visible (the bump tokens are often whitespace)."""
    return token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")


def token_spans(model, text: str) -> list[tuple[int, int, int]]:
    """(id, start, end) per token: the characters of `text` each token covers (the fast tokenizer's offsets)."""
    encoding = model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [(i, start, end) for i, (start, end) in zip(encoding["input_ids"], encoding["offset_mapping"])]


def tokenize(text: str) -> pd.DataFrame:
    """One row per span of text that both tokenizers cut at its ends, each model's tokens and IDs in it.

    A span ends where both tokenizations have a token ending at the same character, so a word one
    tokenizer splits and the other keeps whole is one row: the pieces side by side with the whole.
    """
    limits.check_text(text, "text")
    spans = {role: token_spans(models.get(role), text) for role in models.MODELS}
    ends = set.intersection(*({end for _, _, end in tokens} for tokens in spans.values()))
    cuts = sorted(ends | {len(text)})
    rows, start = [], 0
    for cut in cuts:
        row = {"text": visible(text[start:cut])}
        for role, tokens in spans.items():
            inside = [(i, s, e) for i, s, e in tokens if start < e <= cut or (s == e == cut)]
            model = models.get(role)
            row[f"{role} tokens"] = " ".join(visible(t) for t in model.decode_tokens([i for i, _, _ in inside]))
            row[f"{role} ids"] = " ".join(str(i) for i, _, _ in inside)
        if row["text"] or any(row[f"{role} ids"] for role in spans):
            rows.append(row)
        start = cut
    frame = pd.DataFrame(rows, columns=["text"] + [f"{r} {c}" for r in models.MODELS for c in ("tokens", "ids")])
    frame.insert(0, "span", range(len(frame)))
    return frame


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
    """Tokens side by side (one row per shared span of text), the correlation table, the vocabulary scatter."""
    return tokenize(text), stats(text), figures.tokenizer_scatter(vocab_tables())


def build(heavy: dict) -> None:
    with gr.Tab("Tokenizers", id="tokenizers"):
        gr.Markdown("Type any text to see how each model's tokenizer splits it, with the IDs. "
                    "The statistics are Pearson correlations between token ID (and log ID) and "
                    "the decoded token's length.")
        text = gr.Textbox(label="Text", lines=3, elem_id="tok-text")
        button = gr.Button("Tokenize", variant="primary", elem_id="tok-run")
        table = gr.Dataframe(label="Tokens side by side, one row per span of text both tokenizers cut at "
                                   "its ends (␣ space, ↵ newline, ⇥ tab)", elem_id="tok-table", wrap=True)
        stats_table = gr.Dataframe(label="ID vs length", elem_id="tok-stats")
        plot = gr.Plot(show_label=False, elem_id="tok-plot")
        examples.cached(EXAMPLES, inputs=text, outputs=[table, stats_table, plot], fn=run)
        # the first call tabulates each whole vocabulary: CPU work like a forward
        button.click(run, inputs=text, outputs=[table, stats_table, plot], **heavy)
