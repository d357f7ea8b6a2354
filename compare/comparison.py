"""`compare`: run one prompt (or a suite) through several models and measure them side by side.

The first model is the reference: prompts given as IDs are in its tokenizer, and cross-model
results pair every other model with it. Three variants say what "the same prompt" means:
    native    each model tokenises the text itself (IDs are decoded by the first model first)
    same_ids  the first model's IDs are fed to every model unchanged
    aligned   each of the first model's tokens is re-encoded on its own by the other tokenizers
              (`datasets_gen.align`), so all models read the text split at the same places;
              tokens that share one character (emoji, CJK in byte-level BPE) are re-encoded together
Under same_ids a tracked token is the first model's ID in every model (the ID each is fed: GPT-NeoX's
6660 is "])," but GPT-2 reads it as " Thus"), and `Trajectory.token` is each model's own text of it.
K divides each row of L by |its mean| over the real vocabulary (k_columns="vocab") or, as the thesis
did, over every row of the LM head, padding included (k_columns="all": 50,280 columns for Mamba-130m).
Per position (`Comparison.to_frame`): r_id_L and r_logid_L, the Pearson r between token ID (and
log(1 + ID)) and L within the row (the thesis's Result 2: lower IDs get higher logits).
Cross-model metrics are taken at *paired positions*: positions after which both models have read
the same text. Where a token splits into several pieces in the other model, the pair uses the
last piece (the position whose prediction is of the same next token) and is flagged `split`; a
position inside a character has no pair. Beside agreement and JS (`_cross`), Conclusion 5 of the thesis
(rows of L differ less between the models than between positions) as RMS distances of L over the
tokens both vocabularies share (`metrics.row_distance`): `d_L` between the two models' rows at
the pair, `d_L_positions` / `other_d_L_positions` from each model's row to its own rows at the
other paired positions (mean, `metrics.position_distance`). d_L < d_L_positions is the claim as
issue #12 reads it; read literally (values within a row differ less than between rows) it compares
each row's L_std with the spread of L_mean over positions, both per position in `to_frame`.
"""
from __future__ import annotations

import json
import os
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import memory, metrics, store
from .loading import cached_model
from .model import Model, integer_ids
from .noise import check_callbacks

VARIANTS = ("native", "same_ids", "aligned")
K_COLUMNS = ("vocab", "all")
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


@dataclass
class Trajectory:
    """One tracked token's L, K and P at every position of one model: each [T]."""

    token: str
    id: int
    L: np.ndarray
    K: np.ndarray
    P: np.ndarray


@dataclass
class Run:
    """One model's results on one prompt. Arrays are [T] or [T, V], V = the real vocabulary.

    `logits`, `k` and `probs` are None when `compare(..., keep_arrays=False)` kept only the
    summaries.
    """

    model: str
    family: str
    vocab_size: int
    ids: np.ndarray
    tokens: list[str]
    logits: np.ndarray | None  # L
    k: np.ndarray | None  # K
    probs: np.ndarray | None  # P
    prediction_ids: np.ndarray
    predictions: list[str]
    p_predictions: np.ndarray  # [T], P of each argmax
    tracked: dict[str, Trajectory]
    k_stats: pd.DataFrame  # position, mean, variance, skew, r_id_L, r_logid_L, L_mean, L_std, n_outliers, tail_bump, outliers
    variance_trend: dict[str, float]
    lock_in: int | None  # None also when the prompt is not periodic
    top_k_ids: np.ndarray  # [T, TOP_K], most probable first
    top_k_probs: np.ndarray
    top_k_tokens: list[list[str]]


@dataclass
class Comparison:
    """The result of `compare` on one prompt: `runs` by model name, `cross` by paired position."""

    prompt: Any
    variant: str
    runs: dict[str, Run]
    cross: pd.DataFrame
    seed: int | None = None
    tokenizer_tables: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    k_columns: str = "vocab"

    def to_frame(self) -> pd.DataFrame:
        """One row per (model, position): token, prediction, P, K statistics, tracked L/K/P."""
        frames = []
        for run in self.runs.values():
            frame = pd.DataFrame({
                "model": run.model, "position": np.arange(len(run.ids)), "token_id": run.ids,
                "token": run.tokens, "prediction_id": run.prediction_ids, "prediction": run.predictions,
                "p_prediction": run.p_predictions})
            frame = frame.merge(run.k_stats, on="position")
            for label, trajectory in run.tracked.items():
                for quantity in ("L", "K", "P"):
                    frame[f"{quantity}[{label}]"] = getattr(trajectory, quantity)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def top_k_frame(self) -> pd.DataFrame:
        """One row per (model, position, rank): the candidate token and its probability."""
        rows = [{"model": run.model, "position": t, "token": run.tokens[t], "rank": rank + 1,
                 "candidate_id": int(run.top_k_ids[t, rank]), "candidate": run.top_k_tokens[t][rank],
                 "p": float(run.top_k_probs[t, rank])}
                for run in self.runs.values() for t in range(len(run.ids)) for rank in range(run.top_k_ids.shape[1])]
        return pd.DataFrame(rows)

    def tracked_frame(self) -> pd.DataFrame:
        """Long form of the trajectories: model, tracked, position, L, K, P."""
        rows = [pd.DataFrame({"model": run.model, "tracked": label, "position": np.arange(len(tr.L)),
                              "L": tr.L, "K": tr.K, "P": tr.P})
                for run in self.runs.values() for label, tr in run.tracked.items()]
        return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
            columns=["model", "tracked", "position", "L", "K", "P"])

    def figures(self) -> dict[str, Any]:
        """The standard figures by file stem (plain matplotlib Figures, see `compare.figures`).

        The K-distribution and flattened-L figures need the [T, V] arrays: without them
        (`keep_arrays=False`) they are left out.
        """
        from . import figures

        names = list(self.runs)
        tokens = {n: self.runs[n].tokens for n in names}
        out = {"top_k": figures.top_k_table(self.top_k_frame())}
        if all(run.k is not None for run in self.runs.values()):
            out["k_distributions"] = figures.k_distributions({n: self.runs[n].k for n in names}, tokens)
            out["flattened_logits"] = figures.flattened_logits({n: self.runs[n].logits for n in names},
                                                               tokens=tokens)
        if any(run.tracked for run in self.runs.values()):
            out["trajectories"] = figures.trajectories(self.tracked_frame(), tokens=tokens)
        if len(self.cross):
            out["cross"] = figures.cross_model(self.cross)
        if self.tokenizer_tables:
            out["tokenizer"] = figures.tokenizer_scatter(self.tokenizer_tables)
        return out

    def metadata(self) -> dict[str, Any]:
        from importlib.metadata import version

        import transformers

        prompt = self.prompt if isinstance(self.prompt, (str, list)) else str(self.prompt)
        return {"models": {n: {"family": r.family, "vocab_size": r.vocab_size}
                           for n, r in self.runs.items()},
                "variant": self.variant, "k_columns": self.k_columns, "seed": self.seed, "prompt": prompt,
                "lock_in": {n: r.lock_in for n, r in self.runs.items()},
                "variance_trend": {n: r.variance_trend for n, r in self.runs.items()},
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                             "nnsight": version("nnsight"), "mamba-gpt2-compare": version("mamba-gpt2-compare")}}

    def save(self, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write runs/cross/top_k/tracked Parquet, metadata.json and figures/*.png to `directory`.

        The folder appears complete or not at all, and overwrite=True replaces only a previous
        comparison, never other files (`compare.store` states the guarantee).
        """
        def write(folder: Path) -> None:
            self.to_frame().to_parquet(folder / "runs.parquet", engine="pyarrow")
            self.cross.to_parquet(folder / "cross.parquet", engine="pyarrow")
            self.top_k_frame().to_parquet(folder / "top_k.parquet", engine="pyarrow")
            self.tracked_frame().to_parquet(folder / "tracked.parquet", engine="pyarrow")
            (folder / "metadata.json").write_text(json.dumps(self.metadata(), indent=2, default=_json_default))
            (folder / "figures").mkdir()
            for stem, figure in self.figures().items():
                figure.savefig(folder / "figures" / f"{stem}.png", dpi=150, bbox_inches="tight")

        return store.publish(directory, write, kind="comparison", overwrite=overwrite)


def compare(prompt, models: Sequence[Any] = ("mamba-130m", "gpt2"), *, variant: str = "aligned",
            track=None, device=None, batch_size: int = 8, progress: bool = True,
            tokenizer_stats: bool = False, keep_arrays: bool = True, stop=None, k_columns: str = "vocab"):
    """Run `prompt` through every model and compare them; see the module docstring for variants.

    prompt: a string, a list of token IDs (first model's tokenizer), a `datasets_gen` suite row
        (a mapping with per-model ``{family}_{variant}_ids``), or a suite (a `datasets.Dataset`, or
        a list of strings/rows/ID lists) → then a list of Comparisons, computed in batches.
    models: sources for `load_model` or loaded `Model` handles; loaded sources are cached.
    track: a token (string that is one token in every tokenizer, or an ID in the first model's
        tokenizer) or a list of them; default for suite rows: the row's target, when it is one
        token in every model.
    tokenizer_stats: also tabulate each tokenizer's ID-vs-length over the whole vocabulary (for
        the tokenizer figure; slower).
    keep_arrays: keep L, K and P ([T, V] each) in every run. False keeps only what is derived
        from them (predictions, tracked trajectories, K statistics, top-k, cross metrics), for
        suites: at a 50k vocabulary the arrays take ~8 MB per model per 14-token prompt. Suites
        run batch by batch, so with False the memory of a suite does not grow with its arrays.
    stop: anything with ``is_set()`` (a `threading.Event`), checked before each batch; once set,
        `Stopped` is raised.
    k_columns: the columns K's row mean runs over: "vocab" (default), the tokenizer's real
        vocabulary, the only logits a model can emit; "all", every row of the LM head, padding
        included, as the thesis computed it (see the module docstring).
    Before any forward, work whose arrays would not fit in memory is refused with the estimate
    (`BYTES_PER_LOGIT` per position and vocabulary entry while a run is measured).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant: unknown {variant!r}; allowed values are {', '.join(VARIANTS)}")
    if k_columns not in K_COLUMNS:
        raise ValueError(f"k_columns: unknown {k_columns!r}; allowed values are {', '.join(K_COLUMNS)}")
    if not isinstance(keep_arrays, bool):
        raise TypeError(f"keep_arrays: must be True or False, got {keep_arrays!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size: must be an integer ≥ 1, got {batch_size!r}")
    check_callbacks(None, stop)
    handles = _load(models, device)
    items, is_suite = _items(prompt)
    prepared = [_prepare(item, handles, variant, track) for item in items]
    batches = [range(s, min(s + batch_size, len(items))) for s in range(0, len(items), batch_size)]
    _check_memory(handles, prepared, batches, keep_arrays)
    tables = ({h.name: metrics.length_table(range(h.vocab_size), _vocab_texts(h)) for h in handles}
              if tokenizer_stats else {})
    shared = [metrics.shared_vocabulary(_vocab_texts(handles[0]), _vocab_texts(h)) for h in handles[1:]]
    results = []
    # batch by batch, so a suite's [T, V] arrays are alive one batch at a time (keep_arrays=False)
    for batch in tqdm(batches, disable=not (progress and is_suite), unit="batch"):
        logits = []
        for m, h in enumerate(handles):
            if stop is not None and stop.is_set():
                raise Stopped(f"compare stopped after {len(results)} of {len(items)} prompts")
            logits.append(_forward(h, [prepared[n].ids[m] for n in batch], padded=k_columns == "all"))
        for i, n in enumerate(batch):
            prep = prepared[n]
            runs = {h.name: _run(h, m, prep.ids[m], logits[m][i], prep.track) for m, h in enumerate(handles)}
            cross = _cross([runs[h.name] for h in handles], prep.pairs, shared)
            if not keep_arrays:
                for m, run in enumerate(runs.values()):
                    run.logits = run.k = run.probs = logits[m][i] = None
            results.append(Comparison(prompt=items[n], variant=variant, runs=runs, cross=cross, seed=prep.seed,
                                      tokenizer_tables=tables, k_columns=k_columns))
        if is_suite:
            del logits
            memory.return_freed()  # else the heap fragments and grows with the suite (`memory.return_freed`)
    return results if is_suite else results[0]


@dataclass
class _Prepared:
    ids: list[list[int]]  # per model
    pairs: list[list[tuple[int, int, bool]]]  # per other model: (position, other position, split)
    track: list[tuple[str, list[int]]]  # (label, ID per model)
    seed: int | None


def _load(models, device) -> list[Model]:
    if isinstance(models, (str, os.PathLike, Model)) or not isinstance(models, Sequence) or not models:
        raise TypeError("models: must be a non-empty list/tuple of model sources (aliases, Hub ids, "
                        f"directories) or loaded Model handles, got {models!r}")
    handles = []
    for source in models:
        if isinstance(source, Model):
            handles.append(source)
            continue
        handles.append(cached_model(source, device=device))
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


def _prepare(item, handles: list[Model], variant: str, track) -> _Prepared:
    seed, target = None, []
    if isinstance(item, Mapping):
        ids, splits, target = _from_row(item, handles, variant)
        seed = json.loads(item.get("params") or "{}").get("seed")
    else:
        first = handles[0]
        if isinstance(item, str):
            if not item.strip():
                raise ValueError(f"prompt: must be a non-empty string, got {item!r}")
            text, ids0 = item, first.encode(item)
        else:
            if not item:
                raise ValueError("prompt: empty list of token IDs; at least one is needed")
            ids0 = first.as_input(item)[0].tolist()
            text = _decode(first, ids0)
        ids, splits = _variant_ids(text, ids0, handles, variant)
    for h, h_ids in zip(handles, ids):
        if not h_ids:
            raise ValueError(f"prompt: {h.name} reads it as no tokens at all; give visible text")
        h.as_input(h_ids)  # raises on out-of-vocabulary IDs and over-long prompts, naming the model
    pairs = [_pairs(handles[0], h, ids[0], ids[m], None if splits is None else (splits[0], splits[m]))
             for m, h in enumerate(handles) if m > 0]
    resolved = target if isinstance(item, Mapping) and track is None else _tracked(track, handles, variant)
    if variant == "same_ids":  # every model is fed the first model's IDs: each tracks the ID it reads
        resolved = [(label, [per_model[0]] * len(handles)) for label, per_model in resolved]
    return _Prepared(ids=ids, pairs=pairs, track=resolved, seed=seed)


def _from_row(row: Mapping, handles: list[Model], variant: str):
    missing = [f"{h.family}_{variant}_ids" for h in handles if f"{h.family}_{variant}_ids" not in row]
    if missing:
        raise ValueError(f"prompt: the suite row has no {missing}; rows come from datasets_gen.build")
    ids = [list(row[f"{h.family}_{variant}_ids"]) for h in handles]
    splits = None
    if variant == "aligned":  # flagged one-piece tokens (byte fragments) count as split: negative
        splits = [[-s if f else s for s, f in zip(row[f"{h.family}_aligned_split"], row[f"{h.family}_aligned_flags"])]
                  for h in handles]
    target_ids = [row.get(f"target_id_{h.family}", -1) for h in handles]
    target = []
    if row.get("target") and all(i is not None and i >= 0 for i in target_ids):
        target = [(row["target"], target_ids)]
    return ids, splits, target


def _variant_ids(text: str, ids0: list[int], handles: list[Model], variant: str):
    if variant == "same_ids":
        return [ids0 for _ in handles], None
    if variant == "native":
        return [ids0] + [h.encode(text) for h in handles[1:]], None
    from datasets_gen import align
    from datasets_gen.tokenizers import load_vocab

    source = load_vocab(handles[0].tokenizer, handles[0].name)
    alignments = [align(ids0, source, load_vocab(h.tokenizer, h.name)) for h in handles[1:]]
    splits = [[1] * len(ids0)] + [[len(p) if not f else -len(p) for p, f in zip(a.pieces, a.flags)]
                                  for a in alignments]
    return [ids0] + [a.ids for a in alignments], splits


def _pairs(first: Model, other: Model, ids_a, ids_b, splits) -> list[tuple[int, int, bool]]:
    """Paired positions (first's, other's, split) where both have read exactly the same text.

    `splits` (aligned variant): target pieces per source token (`datasets_gen.align`): 0 for a
    token ending inside a character (no pair), negative where `align` flagged the token (part of a
    multi-token character, or bytes that are not UTF-8) even though it is one piece. A pair is
    `split` unless it is one token to one token.
    """
    if splits is not None:
        ends_a, ends_b = np.cumsum(np.abs(splits[0])) - 1, np.cumsum(np.abs(splits[1])) - 1
        return [(int(a), int(b), sa != 1 or sb != 1)
                for a, b, sa, sb in zip(ends_a, ends_b, *splits) if sa and sb]
    if ids_a == ids_b and first.tokenizer is other.tokenizer:
        return [(t, t, False) for t in range(len(ids_a))]
    text_a, text_b = _decode(first, ids_a), _decode(other, ids_b)
    if ids_a == ids_b and text_a != text_b:  # same_ids across tokenizers: compare by position
        return [(t, t, False) for t in range(len(ids_a))]
    # Native: a normaliser (GPT-NeoX's NFC) may have changed one model's text, so equal lengths
    # mean equal text only within the prefix both texts share.
    shared = len(os.path.commonprefix([text_a, text_b]))
    ends_a, ends_b = _text_ends(first, ids_a, text_a), _text_ends(other, ids_b, text_b)
    pairs, previous = [], (-1, -1)
    for end, a in ends_a.items():
        if end <= shared and end in ends_b:
            b = ends_b[end]
            pairs.append((a, b, (a - previous[0], b - previous[1]) != (1, 1)))
            previous = (a, b)
    return pairs


def _text_ends(handle: Model, ids: list[int], text: str) -> dict[int, int]:
    """Length of the text read after each position → that position, where that is a prefix of
    `text` (all of `ids` decoded): a position inside a character decodes to U+FFFD, not a prefix."""
    ends = {}
    for t in range(len(ids)):
        prefix = _decode(handle, ids[: t + 1])
        if text.startswith(prefix):
            ends[len(prefix)] = t
    return ends


def _decode(handle: Model, ids) -> str:
    return handle.tokenizer.decode(list(ids), clean_up_tokenization_spaces=False)


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
            label = _decode(handles[0], [int(item)])
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
    return out


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


def _check_memory(handles: list[Model], prepared: list[_Prepared], batches: list[range], keep_arrays: bool) -> None:
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


def _cross(runs: list[Run], pairs, shared) -> pd.DataFrame:
    """First model vs each other at paired positions: agreement and JS over shared tokens.

    `shared_mass`: how much of each model's P the shared tokens hold (JS renormalises over them).
    d_L, d_L_positions, other_d_L_positions: Conclusion 5's distances (module docstring).
    """
    first, frames = runs[0], []
    for other, other_pairs, (ids_a, ids_b) in zip(runs[1:], pairs, shared):
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
            "agree": np.array(prediction) == np.array(other_prediction),
            "js": metrics.js_divergence(P_a, P_b), "shared_mass": P_a.sum(axis=1),
            "other_shared_mass": P_b.sum(axis=1), "d_L": metrics.row_distance(L_a, L_b),
            "d_L_positions": metrics.position_distance(L_a), "other_d_L_positions": metrics.position_distance(L_b)}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CROSS_COLUMNS)


def _vocab_texts(handle: Model) -> list[str]:
    if handle not in _VOCAB_TEXTS:
        _VOCAB_TEXTS[handle] = metrics.decode_each(handle.tokenizer, range(handle.vocab_size))
    return _VOCAB_TEXTS[handle]


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


