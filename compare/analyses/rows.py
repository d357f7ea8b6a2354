"""A `datasets_gen` suite row read for one model: its own columns, or its text tokenised at run time.

A suite row holds, per tokenizer family datasets_gen builds (GPT-NeoX-20B's and GPT-2's),
``{prefix}_{variant}_ids``, ``target_id_{prefix}`` and the patching columns ``{prefix}_{kind}_ids``,
``{prefix}_answer_id``, ``{prefix}_wrong_id``; a model reads those of its family, else those of its
tokenizer family (Pythia and Mamba-2 read Mamba's). A model with a tokenizer of its own (the
hybrids: Granite-4.0-H, Falcon-H1, Nemotron-H) has none, so its IDs are made here, at run time,
from the row's text fields with that model's tokenizer, as datasets_gen makes a column and under
the same checks (`one_token`, `same_length`, which datasets_gen itself calls):

    native    `text` encoded
    same_ids  the source IDs unchanged (every family's same_ids column holds them)
    aligned   the source IDs aligned token by token (`align`) from the source tokenizer: a model
              of the same call that reads it, else the tokenizer the suite's build recorded
              (`source_vocab`: a local path or Hub id in the row's `params`)
    target    `target` (the text of one source token) encoded: one token, else none, with the
              reason, as a column's -1; a byte fragment (U+FFFD) has none, as `align` flags it
    pair      `text` and `corrupt_<kind>` encoded to equal lengths; `answer`, `wrong` one token each

What is read so says `run_time=True`, and the study files it in a `run_time_ids` column: those
IDs are the model's own tokenisation of the row, not the suite's stored (and published) columns.
"""
from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import try_to_load_from_cache

from ..handle import vocabularies
from ..handle.model import Model
from ..handle.vocabularies import Vocab, load_vocab
from .align import align


@dataclass(frozen=True)
class RowIds:
    """One model's reading of a row in one variant.

    splits: aligned only, the model's tokens per source token (0: ends inside a character;
        negative where `align` flagged the token), as `pairing` takes them; else None.
    target: the one-token target ID, or None with `reason` saying why there is none.
    """

    ids: list[int]
    splits: list[int] | None
    target: int | None
    reason: str | None
    run_time: bool


@dataclass(frozen=True)
class Pair:
    """A row's clean/corrupt patching pair of one kind for one model, with its answer and wrong IDs."""

    clean: list[int]
    corrupt: list[int]
    answer: int
    wrong: int
    run_time: bool


def prefix_of(row: Mapping, handle: Model, variant: str) -> str | None:
    """The column prefix of `handle` in `row`: its family, else its tokenizer family's; None if neither."""
    for prefix in dict.fromkeys([handle.family, vocabularies.tokenizer_family(handle.family)]):
        if row.get(f"{prefix}_{variant}_ids") is not None:
            return prefix
    return None


def read(row: Mapping, handle: Model, variant: str, source: Vocab | None = None) -> RowIds:
    """`handle`'s IDs and target in `row`: its columns, else tokenised now (the module docstring).

    source: the tokenizer of the row's `source` family, needed only to align at run time.
    """
    prefix = prefix_of(row, handle, variant)
    if prefix is not None:
        splits = None
        if variant == "aligned":  # flagged one-piece tokens (byte fragments) count as split: negative
            splits = [-s if f else s for s, f in zip(row[f"{prefix}_aligned_split"], row[f"{prefix}_aligned_flags"])]
        target = row.get(f"target_id_{prefix}")
        if target is not None and target >= 0:
            return RowIds(list(row[f"{prefix}_{variant}_ids"]), splits, int(target), None, False)
        reason = (f"its target {row['target']!r} is not one token in the {prefix} tokenizer (target_id_{prefix} "
                  "is -1)" if row.get("target") else "the row has no target")
        return RowIds(list(row[f"{prefix}_{variant}_ids"]), splits, None, reason, False)
    vocab = load_vocab(handle.tokenizer, handle.name)
    splits = None
    if variant == "native":
        ids = vocab.encode(row["text"])
    else:
        ids = _source_ids(row, handle)
        if variant == "aligned":
            source = source_vocab(row) if source is None else source
            if source is None:
                raise ValueError(f"variant: the suite has no columns for {handle.name} (family {handle.family}), and "
                                 f"'aligned' re-encodes the row's {row.get('source')} IDs token by token, which needs "
                                 f"the {row.get('source')} tokenizer: give a model that reads it in the same call, "
                                 f"or use 'native' ({handle.name} tokenises the row's text); the suite's build "
                                 f"recorded it as {recorded_source(row)!r}, which is not a tokenizer found here")
            aligned = align(ids, source, vocab)
            ids = aligned.ids
            splits = [-len(p) if f else len(p) for p, f in zip(aligned.pieces, aligned.flags)]
    target, reason = _target(row, vocab)
    return RowIds(ids, splits, target, reason, True)


def pair(row: Mapping, handle: Model, kind: str) -> Pair:
    """The row's `kind` counterfactual for `handle`: its columns, else tokenised now with the checks
    datasets_gen builds them under (equal lengths, one-token answer and wrong)."""
    prefix = prefix_of(row, handle, "native")
    if prefix is not None and row.get(f"{prefix}_{kind}_ids") is not None:
        return Pair(list(row[f"{prefix}_native_ids"]), list(row[f"{prefix}_{kind}_ids"]),
                    int(row[f"{prefix}_answer_id"]), int(row[f"{prefix}_wrong_id"]), False)
    corrupt = row.get(f"corrupt_{kind}")
    if corrupt is None:
        raise ValueError(f"corruption: the suite row {row.get('id')!r} has no {kind!r} counterfactual "
                         "(only the natural suite's IOI prompts have them)")
    vocab = load_vocab(handle.tokenizer, handle.name)
    clean, corrupt = same_length(row["text"], corrupt, vocab, kind)
    return Pair(clean, corrupt, one_token(row["answer"], vocab, "answer"), one_token(row["wrong"], vocab, "wrong"),
                True)


def one_token(text: str, vocab: Vocab, what: str) -> int:
    """The ID of `text`, which must be exactly one token of `vocab` (" Mary", its leading space included)."""
    vocabularies.check_encodable(text, what)
    ids = vocab.encode(text)
    if len(ids) != 1:
        raise ValueError(f"{what}: {text!r} is {len(ids)} tokens in the {vocab.name} tokenizer; it must be one "
                         "token in every tokenizer (mind the leading space)")
    return ids[0]


def same_length(clean: str, corrupt: str, vocab: Vocab, what: str) -> tuple[list[int], list[int]]:
    """The IDs of a clean prompt and its corrupt twin, which must be as many: patching replaces
    position by position."""
    clean_ids, corrupt_ids = vocab.encode(clean), vocab.encode(corrupt)
    if len(clean_ids) != len(corrupt_ids):
        raise ValueError(f"{what}: {corrupt!r} is {len(corrupt_ids)} tokens in the {vocab.name} tokenizer and its "
                         f"clean prompt {clean!r} {len(clean_ids)}; patching needs equal lengths")
    return clean_ids, corrupt_ids


def source_vocab(row: Mapping) -> Vocab | None:
    """The source tokenizer the row's suite was built with, from where its build recorded it
    (`params` → tokenizers → the row's `source`, `datasets_gen.build`): a local path that holds a
    tokenizer, or a Hub id ("owner/name") whose tokenizer.json is in the local Hub cache (never
    fetched: a row is read offline as fast as online); None otherwise (a tokenizer object
    recorded by its class name, a folder since moved, a Hub id not cached)."""
    origin = recorded_source(row)
    if not isinstance(origin, str):
        return None
    if not Path(origin).expanduser().exists():
        cached = try_to_load_from_cache(origin, "tokenizer.json") if HUB_ID.fullmatch(origin) else None
        if not isinstance(cached, str):  # None, or the cache's "known to be missing"
            return None
        origin = cached
    return _vocab_at(origin, str(row.get("source")))


def recorded_source(row: Mapping):
    """Where the row's build recorded its source tokenizer (`params` → tokenizers → `source`), or None."""
    try:
        tokenizers = json.loads(row.get("params") or "{}").get("tokenizers")
    except (TypeError, ValueError, AttributeError):  # a hand-made or damaged row's params
        return None
    return tokenizers.get(row.get("source")) if isinstance(tokenizers, dict) else None


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")


@functools.lru_cache(maxsize=8)
def _vocab_at(origin: str, name: str) -> Vocab | None:
    """`load_vocab` of a recorded origin, once per origin (a suite's rows share it); None if it fails."""
    try:
        return load_vocab(origin, name)
    except Exception:  # whatever a recorded path holds (tokenizers' parse errors are bare Exceptions): the caller's clear error
        return None


def _source_ids(row: Mapping, handle: Model) -> list[int]:
    """The row's source IDs: every family's same_ids column holds them unchanged."""
    columns = sorted(k for k, v in row.items() if k.endswith("_same_ids_ids") and v is not None)
    if not columns:
        version = json.loads(row.get("params") or "{}").get("version", "unknown")
        raise ValueError(f"prompt: the suite row {row.get('id')!r} (datasets_gen version {version}) has no "
                         f"<family>_same_ids_ids column to take the source IDs from for {handle.name}; "
                         "use variant 'native' or rebuild the suite (python -m datasets_gen build)")
    return list(row[columns[0]])


def _target(row: Mapping, vocab: Vocab) -> tuple[int | None, str | None]:
    text = row.get("target")
    if not text:
        return None, "the row has no target"
    if "\ufffd" in text:
        return None, f"its target {text!r} is part of a character in the {row.get('source')} tokenizer"
    ids = vocab.encode(text)
    if len(ids) != 1:
        return None, f"its target {text!r} is {len(ids)} tokens in the {vocab.name} tokenizer"
    return ids[0], None
