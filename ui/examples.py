"""Cached examples keyed by the models that computed them.

Gradio stores an example's outputs under `GRADIO_EXAMPLES_CACHE/<component id>`: keyed by the
page's layout, so after a restart with other models the old models' results would show under
the new header. `cached` stores them one level down, under a hash of both model sources
(`models.key`), inside Gradio's cache folder (the only place it serves cached files from).
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from . import models


def cached(examples, *, inputs, outputs, fn, **kwargs) -> gr.Examples:
    """`gr.Examples(..., cache_examples=True, cache_mode="lazy")` with a per-model-pair cache folder."""
    block = gr.Examples(examples, inputs=inputs, outputs=outputs, fn=fn, cache_examples=True,
                        cache_mode="lazy", **kwargs)
    # Gradio's own attributes (no public option for the folder); tests/unit/test_ui_callbacks.py checks them.
    folder = Path(block.cached_folder)
    block.cached_folder = folder.parent / f"models-{models.key()}" / folder.name
    block.cached_file = block.cached_folder / "log.csv"
    block.cached_indices_file = block.cached_folder / "indices.csv"
    return block
