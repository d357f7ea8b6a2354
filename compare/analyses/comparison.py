"""`compare`: run one prompt (or a suite) through several models and measure them side by side.

Which IDs each model reads and which positions pair up: `pairing` (variants native, same_ids,
aligned); the results and how they are saved: `results`.

K divides each row of L by |its mean| over the real vocabulary (k_columns="vocab") or, as the thesis
did, over every row of the LM head, padding included (k_columns="all": 50,280 columns for Mamba-130m).
Per position (`Comparison.to_frame`): r_id_L and r_logid_L, the Pearson r between token ID (and
log(1 + ID)) and L within the row (the thesis's Result 2: lower IDs get higher logits).
Cross-model metrics at paired positions (`pairing`): agreement and JS (`_cross`), and Conclusion 5
of the thesis (rows of L differ less between the models than between positions) as RMS distances of L over the
tokens both vocabularies share (`metrics.row_distance`): `d_L` between the two models' rows at
the pair, `d_L_positions` / `other_d_L_positions` from each model's row to its own rows at the
other paired positions (mean, `metrics.position_distance`). d_L < d_L_positions is the claim as
issue #12 reads it; read literally (values within a row differ less than between rows) it compares
each row's L_std with the spread of L_mean over positions, both per position in `to_frame`.
For a model that reads the first model's tokenizer (`vocabularies.same_tokenizer`) the shared
tokens are the whole vocabulary: every ID, byte fragments included.
"""
from __future__ import annotations

import os
import weakref
from collections.abc import Mapping
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..base import memory
from ..measures import metrics
from ..base.checks import check_callbacks
from ..handle.inputs import check_device
from ..handle.loading import cached_model
from ..handle.model import Model, integer_ids, parse_dtype
from .pairing import VARIANTS, Prepared, prepare  # noqa: F401 (VARIANTS: exported here too)
from .signatures import COMPARE, K_COLUMNS  # noqa: F401 (K_COLUMNS: exported here too)
from .results import Comparison, Run, Trajectory
from ..handle.vocabularies import load_vocab, same_tokenizer, same_tokens, token_texts

BYTES_PER_LOGIT = 48  # peak per (position, vocabulary entry) while a run is measured: L, K, P in float64, top-k
KEPT_BYTES_PER_LOGIT = 12  # what a run keeps with keep_arrays: L, K and P in float32
TOP_K = 5
OUTLIER_Z = 4.0
MAX_OUTLIERS_LISTED = 50
CROSS_COLUMNS = ["model", "other", "position", "other_position", "token", "other_token", "split", "prediction",
                 "other_prediction", "agree", "js", "shared_mass", "other_shared_mass", "d_L", "d_L_positions",
                 "other_d_L_positions"]

# A cache, not state: each model's vocabulary as text (models themselves: `loading.cached_model`).
_VOCAB_TEXTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class Stopped(Exception):
    """`compare` was stopped by its caller (the ``stop`` event was set)."""


DEFAULT_MODELS = ("mamba-130m", "gpt2")


def compare(prompt, models: Sequence[Any] = DEFAULT_MODELS, *, model=None, variant: str = "aligned",
            track=None, device=None, batch_size: int = 8, progress: bool = True,
            tokenizer_stats: bool = False, keep_arrays: bool = True, stop=None, k_columns: str = "vocab",
            dtype=None):
    """Run `prompt` through every model and compare them; see the module docstring for variants.

    prompt: a string, a list of token IDs (first model's tokenizer), a `datasets_gen` suite row
        (a mapping with per-model ``{family}_{variant}_ids``), or a suite (a `datasets.Dataset`, or
        a list of strings/rows/ID lists) → then a list of Comparisons, computed in batches.
    models: sources for `load_model` or loaded `Model` handles, any number and any families (two
        Mambas, Mamba vs Pythia, three models), keyed by name; loaded sources are cached. A model
        that reads the first model's tokenizer (Mamba and Pythia: GPT-NeoX-20B) is listed in
        `Comparison.same_tokenizer`: its variants coincide with the first model's and its
        cross-model metrics cover the whole vocabulary.
    model: the same as `models`, named as every other analysis names it (the calling convention,
        `engine.convention`): a list of models, or one (a comparison of one model); give
        `models` or `model`, not both.
    track: a token (string that is one token in every tokenizer, or an ID in the first model's
        tokenizer) or a list of them; default for suite rows: the row's target, when it is one
        token in every model.
    tokenizer_stats: also tabulate each tokenizer's ID-vs-length over the whole vocabulary (for
        the tokenizer figure; slower).
    keep_arrays: keep L, K and P ([T, V] each) in every run. False keeps only what is derived
        from them (predictions, tracked trajectories, K statistics, top-k, cross metrics), for
        suites: at a 50k vocabulary the arrays take ~8 MB per model per 14-token prompt. Suites
        run batch by batch, so with False the memory of a suite does not grow with its arrays.
    progress: True (default) shows a progress bar over a suite's batches, False none; a callable
        is called as progress(prompts_done, prompts_total) after each batch (the convention's form).
    stop: anything with ``is_set()`` (a `threading.Event`), checked before each batch; once set,
        `Stopped` is raised.
    dtype: the dtype models given by source are loaded in ("float32" default, or "bfloat16":
        `load_model`); loaded handles keep their own.
    k_columns: the columns K's row mean runs over: "vocab" (default), the tokenizer's real
        vocabulary, the only logits a model can emit; "all", every row of the LM head, padding
        included, as the thesis computed it (see the module docstring).
    Before any forward, work whose arrays would not fit in memory is refused with the estimate
    (`BYTES_PER_LOGIT` per position and vocabulary entry while a run is measured).
    """
    batch_size = COMPARE.check(variant=variant, k_columns=k_columns, keep_arrays=keep_arrays,
                               tokenizer_stats=tokenizer_stats, batch_size=batch_size)["batch_size"]  # its signature

    if model is not None:
        if models is not DEFAULT_MODELS:
            raise ValueError("model: give the models once, as `models` (positional) or as `model=`, not both")
        models = list(model) if isinstance(model, (list, tuple)) else [model]
    parse_dtype(dtype)  # checked even when every model is a loaded handle, which keeps its own dtype
    check_device(device)
    if not isinstance(progress, bool):
        check_callbacks(progress, stop)
    check_callbacks(None, stop)
    handles = _load(models, device, dtype)
    items, is_suite = _items(prompt)
    same = [same_tokenizer(handles[0].tokenizer, h.tokenizer) for h in handles]
    prepared = [prepare(item, handles, variant, track, same) for item in items]
    batches = [range(s, min(s + batch_size, len(items))) for s in range(0, len(items), batch_size)]
    _check_memory(handles, prepared, batches, keep_arrays)
    tables = ({h.name: metrics.length_table(range(h.vocab_size), _vocab_texts(h)) for h in handles}
              if tokenizer_stats else {})
    # one tokenizer: every ID is the same token in both, so the whole vocabulary is shared (the
    # strings would leave out the IDs that decode alike, byte fragments: U+FFFD)
    shared = [(np.arange(h.vocab_size),) * 2 if s else
              metrics.shared_vocabulary(_vocab_texts(handles[0]), _vocab_texts(h))
              for h, s in zip(handles[1:], same[1:])]
    vocabs = [load_vocab(h.tokenizer, h.name) for h in handles]
    results = []
    # batch by batch, so a suite's [T, V] arrays are alive one batch at a time (keep_arrays=False)
    report = progress if callable(progress) else None
    for batch in tqdm(batches, disable=report is not None or not (progress and is_suite), unit="batch"):
        logits = []
        for m, h in enumerate(handles):
            if stop is not None and stop.is_set():
                raise Stopped(f"compare stopped after {len(results)} of {len(items)} prompts")
            logits.append(_forward(h, [prepared[n].ids[m] for n in batch], padded=k_columns == "all"))
        for i, n in enumerate(batch):
            prep = prepared[n]
            runs = {h.name: _run(h, m, prep.ids[m], logits[m][i], prep.track) for m, h in enumerate(handles)}
            cross = _cross([runs[h.name] for h in handles], prep.pairs, shared, vocabs)
            if not keep_arrays:
                for m, run in enumerate(runs.values()):
                    run.logits = run.k = run.probs = logits[m][i] = None
            results.append(Comparison(prompt=items[n], variant=variant, runs=runs, cross=cross, seed=prep.seed,
                                      tokenizer_tables=tables, k_columns=k_columns,
                                      same_tokenizer=tuple(h.name for h, s in zip(handles[1:], same[1:]) if s),
                                      run_time_ids=tuple(h.name for h, r in zip(handles, prep.run_time) if r)))
        if report is not None:
            report(len(results), len(items))
        if is_suite:
            del logits
            memory.return_freed()  # else the heap fragments and grows with the suite (`memory.return_freed`)
    return results if is_suite else results[0]


def _load(models, device, dtype=None) -> list[Model]:
    if isinstance(models, (str, os.PathLike, Model)) or not isinstance(models, Sequence) or not models:
        # a Model's repr is its whole module tree: name it instead
        got = f"one Model ({models.name!r}); pass a list" if isinstance(models, Model) else repr(models)
        raise TypeError("models: must be a non-empty list/tuple of model sources (aliases, Hub ids, "
                        f"directories) or loaded Model handles, got {got}")
    handles = []
    for source in models:
        if isinstance(source, Model):
            handles.append(source)
            continue
        handles.append(cached_model(source, device=device, dtype=dtype))
    names = [h.name for h in handles]
    if len(set(names)) != len(names):
        raise ValueError(f"models: names must be distinct to key the results, got {names}")
    return handles


def _items(prompt) -> tuple[list[Any], bool]:
    """The prompts to run and whether the caller passed a suite (several prompts)."""
    if isinstance(prompt, (str, Mapping, torch.Tensor, np.ndarray)):
        return [_as_ids_if_array(prompt)], False
    if hasattr(prompt, "features") and hasattr(prompt, "__iter__"):  # a datasets.Dataset
        return list(prompt), True
    if isinstance(prompt, (list, tuple)):
        if prompt and all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in prompt):
            return [list(prompt)], False
        if prompt and all(isinstance(x, (str, Mapping, list, tuple)) for x in prompt):
            return [list(x) if isinstance(x, tuple) else x for x in prompt], True
        if not prompt:
            raise ValueError("prompt: empty list; give a non-empty string, token IDs or a suite")
    raise TypeError("prompt: must be a string, a list of token IDs, a suite row or a suite "
                    f"(datasets.Dataset or list of prompts), got {type(prompt).__name__}")


def _as_ids_if_array(prompt):
    if isinstance(prompt, (torch.Tensor, np.ndarray)):
        if prompt.ndim != 1:
            raise ValueError(f"prompt: token IDs must be one-dimensional, got shape {tuple(prompt.shape)}")
        return integer_ids(prompt, "prompt: token IDs")  # floats refused, not truncated
    return prompt


def _forward(handle: Model, batch: list[list[int]], padded: bool = False) -> list[np.ndarray]:
    """L of each prompt of a batch, [T, V] float32 (padded: every LM-head row, `Model.logits`),
    from one right-padded forward.

    Both models are causal, so a real position never sees the padding after it: no attention mask
    and no position-id shift are needed, and padded positions are simply cut off.
    """
    width = max(len(b) for b in batch)
    ids = torch.tensor([b + [0] * (width - len(b)) for b in batch])
    L = handle.logits(ids, padded=padded).cpu().numpy()
    return [L[i, : len(b)] for i, b in enumerate(batch)]


def _check_memory(handles: list[Model], prepared: list[Prepared], batches: list[range], keep_arrays: bool) -> None:
    """Refuse, before any forward, a prompt or suite whose arrays would not fit in memory.

    Peak: the largest batch's forward and measurement; plus, with keep_arrays, the L, K and P
    kept for every prompt (`KEPT_BYTES_PER_LOGIT`).
    """
    def logits(n):
        return sum(len(prep_ids) * h.vocab_size for h, prep_ids in zip(handles, prepared[n].ids))

    peak = max(sum(logits(n) for n in batch) * BYTES_PER_LOGIT
               + max(h.forward_bytes(len(batch), max(len(prepared[n].ids[m]) for n in batch))
                     for m, h in enumerate(handles))
               for batch in batches)
    kept = sum(logits(n) for n in range(len(prepared))) * KEPT_BYTES_PER_LOGIT if keep_arrays else 0
    longest = max(len(ids) for prep in prepared for ids in prep.ids)
    what = (f"comparing {len(prepared):,} prompts (up to {longest:,} tokens)" if len(prepared) > 1 else
            f"comparing a {longest:,}-token prompt")
    memory.check_fits(peak + kept, f"{what} over {len(handles)} models ([T, V] arrays L, K, P)",
                      "shorten the prompt, use a smaller batch_size, or keep_arrays=False for a suite")


def _run(handle: Model, m: int, ids: list[int], L: np.ndarray, track) -> Run:
    """Model `m`'s results; `track` holds (label, ID per model) pairs. L [T, V], or [T, V_pad]
    with the LM head's padding rows (k_columns="all"), which only K's row mean reads."""
    L, L_padding = L[:, : handle.vocab_size], (L[:, handle.vocab_size:] if L.shape[1] > handle.vocab_size else None)
    K, P = metrics.normalise(L, L_padding), metrics.softmax(L)
    prediction_ids = metrics.argmax(L)
    texts = _vocab_texts(handle)
    stats = (metrics.k_stats(K).merge(metrics.id_logit_correlation(L), on="position")
             .merge(metrics.row_moments(L), on="position"))
    outliers = [metrics.tail_outliers(row, OUTLIER_Z) for row in K]
    stats["n_outliers"] = [len(o) for o in outliers]
    stats["tail_bump"] = stats["n_outliers"] >= metrics.BUMP_MIN_SIZE  # `metrics.tail_bump`, outliers reused
    stats["outliers"] = [[texts[i] for i in o[:MAX_OUTLIERS_LISTED]] for o in outliers]
    p = metrics.period(ids)
    top_ids, top_probs = metrics.top_k(P, min(TOP_K, P.shape[1]))
    positions = np.arange(len(ids))
    tracked = {label: Trajectory(texts[per_model[m]], per_model[m], *(X[positions, per_model[m]] for X in (L, K, P)))
               for label, per_model in track}
    return Run(model=handle.name, family=handle.family, vocab_size=handle.vocab_size, ids=np.array(ids),
               tokens=[texts[i] for i in ids], logits=L, k=K.astype(np.float32), probs=P.astype(np.float32),
               prediction_ids=prediction_ids, predictions=[texts[i] for i in prediction_ids],
               p_predictions=P[positions, prediction_ids].astype(np.float32), tracked=tracked, k_stats=stats,
               variance_trend=metrics.variance_trend(stats["variance"]),
               lock_in=None if p is None else metrics.lock_in(prediction_ids, metrics.continuation(ids, p)),
               top_k_ids=top_ids, top_k_probs=top_probs,
               top_k_tokens=[[texts[i] for i in row] for row in top_ids])


def _cross(runs: list[Run], pairs, shared, vocabs) -> pd.DataFrame:
    """First model vs each other at paired positions: agreement and JS over shared tokens.

    `agree`: the two predictions are the same token, byte for byte (`vocabularies.same_tokens`;
    two different pieces of a character both print as U+FFFD).

    `shared_mass`: how much of each model's P the shared tokens hold (JS renormalises over them).
    d_L, d_L_positions, other_d_L_positions: Conclusion 5's distances (module docstring).
    """
    first, frames = runs[0], []
    for other, vocab, other_pairs, (ids_a, ids_b) in zip(runs[1:], vocabs[1:], pairs, shared):
        if not other_pairs:
            continue
        a, b, split = (np.array(x) for x in zip(*other_pairs))
        P_a, P_b = first.probs[a][:, ids_a], other.probs[b][:, ids_b]
        L_a, L_b = first.logits[a][:, ids_a], other.logits[b][:, ids_b]
        prediction = [first.predictions[i] for i in a]
        other_prediction = [other.predictions[i] for i in b]
        frames.append(pd.DataFrame({
            "model": first.model, "other": other.model, "position": a, "other_position": b,
            "token": [first.tokens[i] for i in a], "other_token": [other.tokens[i] for i in b],
            "split": split, "prediction": prediction, "other_prediction": other_prediction,
            "agree": np.array(same_tokens(vocabs[0], first.prediction_ids[a], vocab, other.prediction_ids[b]),
                              dtype=bool),
            "js": metrics.js_divergence(P_a, P_b), "shared_mass": P_a.sum(axis=1),
            "other_shared_mass": P_b.sum(axis=1), "d_L": metrics.row_distance(L_a, L_b),
            "d_L_positions": metrics.position_distance(L_a), "other_d_L_positions": metrics.position_distance(L_b)}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CROSS_COLUMNS)


def _vocab_texts(handle: Model) -> list[str]:
    if handle not in _VOCAB_TEXTS:
        _VOCAB_TEXTS[handle] = token_texts(handle.tokenizer, range(handle.vocab_size))
    return _VOCAB_TEXTS[handle]
