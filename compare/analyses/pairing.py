"""Pairing: what "the same prompt" means for several models, and which of their positions match.

The first model is the reference: prompts given as IDs are in its tokenizer, and cross-model
results pair every other model with it. Three variants say what "the same prompt" means:
    native    each model tokenises the text itself (IDs are decoded by the first model first)
    same_ids  the first model's IDs are fed to every model unchanged
    aligned   each of the first model's tokens is re-encoded on its own by the other tokenizers
              (`compare.analyses.align`), so all models read the text split at the same places;
              tokens that share one character (emoji, CJK in byte-level BPE) are re-encoded together
Under same_ids a tracked token is the first model's ID in every model (the ID each is fed: GPT-NeoX's
6660 is "])," but GPT-2 reads it as " Thus"), and `Trajectory.token` is each model's own text of it.
Cross-model metrics are taken at *paired positions*: positions after which both models have read
the same text (up to Unicode canonical equivalence, where a normaliser such as GPT-NeoX's NFC
changed it). Where a token splits into several pieces in the other model, the pair uses the last
piece (the position whose prediction is of the same next token) and is flagged `split`; a position
inside a character has no pair.

Models that read the same tokenizer (Mamba and Pythia: GPT-NeoX-20B; `same`, from
`vocabularies.same_tokenizer`) need none of this: every variant is the first model's IDs, every
position pairs with itself, and `compare` measures them over the whole vocabulary.

Suite rows (`datasets_gen.build`) hold ``{family}_{variant}_ids`` per model family; a family
whose tokenizer is another's (Pythia's is Mamba's, `vocabularies.tokenizer_family`) reads that
family's columns where its own are absent, as in suites built before it had columns. A model
with neither (a hybrid's own tokenizer) tokenises the row's text at run time (`rows`), listed in
`Comparison.run_time_ids`.
"""
from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..handle import vocabularies
from . import rows
from .align import align
from ..handle.model import Model
from .signatures import VARIANTS  # noqa: F401 (the allowed variants, exported here too)


@dataclass
class Prepared:
    ids: list[list[int]]  # per model
    pairs: list[list[tuple[int, int, bool]]]  # per other model: (position, other position, split)
    track: list[tuple[str, list[int]]]  # (label, ID per model)
    seed: int | None
    run_time: list[bool]  # per model: a suite row without its columns, so tokenised now (`rows`)


def prepare(item, handles: list[Model], variant: str, track, same: list[bool]) -> Prepared:
    """One prompt's IDs per model, its paired positions and tracked tokens, checked against every model.

    same: per model, whether it reads the first model's tokenizer.
    """
    seed, target, run_time = None, [], [False] * len(handles)
    if isinstance(item, Mapping):
        ids, splits, target, run_time = _from_row(item, handles, variant)
        seed = json.loads(item.get("params") or "{}").get("seed")
    else:
        first = handles[0]
        if isinstance(item, str):
            if not item.strip():
                raise ValueError(f"prompt: must hold text other than whitespace, got {item!r}")
            text, ids0 = item, first.encode(item)
        else:
            if not item:
                raise ValueError("prompt: empty list of token IDs; at least one is needed")
            ids0 = first.as_input(item)[0].tolist()
            text = vocabularies.text(first.tokenizer, ids0)
        ids, splits = _variant_ids(text, ids0, handles, variant, same)
    for h, h_ids in zip(handles, ids):
        if not h_ids:
            raise ValueError(f"prompt: {h.name} reads it as no tokens at all; give visible text")
        h.as_input(h_ids)  # raises on out-of-vocabulary IDs and over-long prompts, naming the model
    pairs = [_pairs(handles[0], h, ids[0], ids[m], None if splits is None else (splits[0], splits[m]), same[m])
             for m, h in enumerate(handles) if m > 0]
    resolved = target if isinstance(item, Mapping) and track is None else _tracked(track, handles, variant)
    if variant == "same_ids":  # every model is fed the first model's IDs: each tracks the ID it reads
        resolved = [(label, [per_model[0]] * len(handles)) for label, per_model in resolved]
    return Prepared(ids=ids, pairs=pairs, track=resolved, seed=seed, run_time=run_time)


def _from_row(row: Mapping, handles: list[Model], variant: str):
    """Each model's IDs, splits (aligned) and the row's target from its columns, or tokenised at run
    time where the suite has none for it (`rows`); the source tokenizer for that comes from a model
    of the call that reads it, else from where the suite's build recorded it (`rows.source_vocab`)."""
    readers = [h for h in handles if vocabularies.tokenizer_family(h.family) == row.get("source")]
    source = vocabularies.load_vocab(readers[0].tokenizer, readers[0].name) if readers else None
    read = [rows.read(row, h, variant, source) for h in handles]
    splits = [r.splits for r in read] if variant == "aligned" else None
    target = []
    if row.get("target") and all(r.target is not None for r in read):
        target = [(row["target"], [r.target for r in read])]
    return [r.ids for r in read], splits, target, [r.run_time for r in read]


def _variant_ids(text: str, ids0: list[int], handles: list[Model], variant: str, same: list[bool]):
    if variant == "same_ids":
        return [ids0 for _ in handles], None
    if variant == "native":
        return [ids0 if s else h.encode(text) for h, s in zip(handles, same)], None
    source = vocabularies.load_vocab(handles[0].tokenizer, handles[0].name)
    ids, splits = [], []
    for h, s in zip(handles, same):
        if s:  # the first model's tokenizer: aligning its IDs to themselves changes nothing
            ids.append(ids0)
            splits.append([1] * len(ids0))
            continue
        a = align(ids0, source, vocabularies.load_vocab(h.tokenizer, h.name))
        ids.append(a.ids)
        splits.append([len(p) if not f else -len(p) for p, f in zip(a.pieces, a.flags)])
    return ids, splits


def _pairs(first: Model, other: Model, ids_a, ids_b, splits, same: bool) -> list[tuple[int, int, bool]]:
    """Paired positions (first's, other's, split) where both have read exactly the same text.

    `splits` (aligned variant): target pieces per source token (`compare.analyses.align`): 0 for a
    token ending inside a character (no pair), negative where `align` flagged the token (part of a
    multi-token character, or bytes that are not UTF-8) even though it is one piece. A pair is
    `split` unless it is one token to one token. same: the two models read one tokenizer.
    """
    if splits is not None:
        ends_a, ends_b = np.cumsum(np.abs(splits[0])) - 1, np.cumsum(np.abs(splits[1])) - 1
        return [(int(a), int(b), sa != 1 or sb != 1)
                for a, b, sa, sb in zip(ends_a, ends_b, *splits) if sa and sb]
    if ids_a == ids_b and same:
        return [(t, t, False) for t in range(len(ids_a))]
    text_a, text_b = vocabularies.text(first.tokenizer, ids_a), vocabularies.text(other.tokenizer, ids_b)
    if ids_a == ids_b and text_a != text_b:  # same_ids across tokenizers: compare by position
        return [(t, t, False) for t in range(len(ids_a))]
    # Native: a normaliser (GPT-NeoX's NFC) may have changed one model's text. Canonically
    # equivalent texts are the same text, so compare NFC forms: the pairs go on after the
    # character it composed. Other changes end the pairing where the texts part.
    canonical = text_a != text_b
    if canonical:
        text_a, text_b = unicodedata.normalize("NFC", text_a), unicodedata.normalize("NFC", text_b)
    shared = len(os.path.commonprefix([text_a, text_b]))
    ends_a, ends_b = _text_ends(first, ids_a, text_a, canonical), _text_ends(other, ids_b, text_b, canonical)
    pairs, previous = [], (-1, -1)
    for end, a in ends_a.items():
        if end <= shared and end in ends_b:
            b = ends_b[end]
            pairs.append((a, b, (a - previous[0], b - previous[1]) != (1, 1)))
            previous = (a, b)
    return pairs


def _text_ends(handle: Model, ids: list[int], text: str, canonical: bool) -> dict[int, int]:
    """Length of the text read after each position → that position, where that is a prefix of
    `text` (all of `ids` decoded): a position inside a character decodes to U+FFFD, not a prefix.
    canonical: `text` is in NFC, so each prefix is compared in NFC too (a base letter whose
    combining mark comes next is then no prefix: NFC composes the two)."""
    ends = {}
    for t in range(len(ids)):
        prefix = vocabularies.text(handle.tokenizer, ids[: t + 1])
        if canonical:
            prefix = unicodedata.normalize("NFC", prefix)
        if text.startswith(prefix):
            ends[len(prefix)] = t
    return ends


def _tracked(track, handles: list[Model], variant: str) -> list[tuple[str, list[int]]]:
    """(label, ID per model) of each tracked token. Under same_ids only the first model's
    tokenizer must hold it (the others are fed its ID); else it must be one token in each."""
    if track is None:
        return []
    items = [track] if isinstance(track, (str, int, np.integer)) else track
    if not isinstance(items, (list, tuple)) or not items:
        raise TypeError(f"track: must be a token string, a token ID, or a list of them, got {track!r}")
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int, np.integer)):
            raise TypeError(f"track: items must be token strings or IDs, got {item!r}")
        if isinstance(item, str):
            label = item
        else:
            handles[0].as_input([int(item)])  # raises naming the model and the allowed range
            label = vocabularies.text(handles[0].tokenizer, [int(item)])
        ids = []
        for m, h in enumerate(handles):
            if m == 0 and not isinstance(item, str):
                ids.append(int(item))
            elif m == 0 or variant != "same_ids":
                ids.append(h.single_token(label, what="track"))
            else:
                h.as_input([ids[0]])  # raises naming the model when its vocabulary has no such ID
                ids.append(ids[0])
        out.append((label, ids))
    # Labels key the trajectories: where different tokens read alike (byte fragments all decode
    # to U+FFFD alone), each is labelled with its ID, or all but one would be dropped.
    alike = {label for label, ids in out if any(other == label and o[0] != ids[0] for other, o in out)}
    return [(f"{label} (ID {ids[0]})" if label in alike else label, ids) for label, ids in out]
