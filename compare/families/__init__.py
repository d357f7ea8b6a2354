"""One adapter per architecture: everything the package knows about a model family, in one place.

A `Family` owns its point registry (each `Point` once: where it lives, its shape, whether noise
on it is affine, whether it may be noised), how to load and check a checkpoint, how to run
blocks l..m from a cached entry, the head, the stage-by-stage rerun and the memory estimate.
`points`, `Model`, `loading`, the noise engine, channels and the UI ask the family of a handle
(`Model.arch`) and never branch on its name. A new architecture is one new module here that
defines a `Family` subclass and adds it to `FAMILIES`, plus its tests.

Shapes are written in the glossary letters of `compare.ssm.mamba` (b, l, d, d_in, n) plus
`heads` (attention heads); the family's `dims` gives each letter's size for a config.
"""
from __future__ import annotations

from pathlib import Path

from ..base.checkpoint import ModelLoadError
from .base import (FP32_BYTES, Point, model_points, Family, TransformersFamily, thirds, causal_mask, from_state_dict,
    transformers_config)
from .gpt2 import GPT2
from .mamba import MAMBA
from .mamba2 import MAMBA2
from .pythia import PYTHIA
from .granite_hybrid import GRANITE_HYBRID
from .falcon_h1 import FALCON_H1
from .nemotron_h import NEMOTRON_H

FAMILIES: dict[str, Family] = {f.name: f for f in (MAMBA, MAMBA2, GPT2, PYTHIA, GRANITE_HYBRID, FALCON_H1, NEMOTRON_H)}
ALIASES: dict[str, str] = {alias: hub for f in FAMILIES.values() for alias, hub in f.aliases.items()}


def get(name: str) -> Family:
    return FAMILIES[name]


def detect(config: dict, directory: Path) -> Family:
    """The family whose checkpoints config.json describes, or ModelLoadError naming the known ones."""
    for family in FAMILIES.values():
        if family.matches(config):
            return family
    raise ModelLoadError(f"{directory}: config.json is not a checkpoint of a known family "
                         f"({', '.join(f.title for f in FAMILIES.values())}): model_type "
                         f"{config.get('model_type')!r}, and not a mamba_ssm config (d_model, n_layer, vocab_size)")
