"""`build_app()`: the Blocks of the whole front end, one tab per view.

Models are not loaded here: the first callback that needs one loads it into the process-wide
cache (`ui.models`), so the page comes up at once and every session shares the same weights.
The latest comparison of a session lives in a `gr.State`, so the Distributions tab reads what
the Compare tab computed instead of recomputing it.
"""
from __future__ import annotations

import gradio as gr

from . import (models, tab_compare, tab_datasets, tab_distributions, tab_noise, tab_patterns,
               tab_tokenizers)

CONCURRENCY = 2
"""Events run at once: the models are CPU-bound and shared, so more would only thrash."""

QUEUE_SIZE = 32


def build_app(*, concurrency: int = CONCURRENCY) -> gr.Blocks:
    with gr.Blocks(title="Mamba vs GPT-2", analytics_enabled=False) as demo:
        gr.Markdown("# Mamba vs GPT-2, side by side\n"
                    f"Models: Mamba `{models.source('mamba')}`, GPT-2 `{models.source('gpt2')}` "
                    "(set with `--mamba/--gpt2` or MAMBA_MODEL/GPT2_MODEL). "
                    "L = logits, K = logits ÷ |row mean of L|, P = probabilities.")
        comparison = gr.State(None)
        with gr.Tabs():
            tab_compare.build(comparison)
            tab_distributions.build(comparison)
            tab_patterns.build()
            tab_noise.build()
            tab_tokenizers.build()
            tab_datasets.build()
    return demo.queue(default_concurrency_limit=concurrency, max_size=QUEUE_SIZE)
