"""Metrics on logits: L → K → P, predictions, cross-model divergence, lock-in, K statistics.

Glossary (one row = one position of one model; V = the model's real vocabulary):
    L  logits                  [T, V]
    K  normalised logits       [T, V]   K[t] = L[t] / |mean_v L[t, v]|
    P  probabilities           [T, V]   P[t] = softmax(L[t])
K puts every position of every model on one scale: a logit's distance from the row's mean in units
of that mean, which is how the thesis compared Mamba and GPT-2 logit vectors.

Every function here is pure (arrays in, arrays/dicts out); `comparison` calls them per run.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from ..handle.vocabularies import token_texts


def normalise(L: np.ndarray, L_padding: np.ndarray | None = None) -> np.ndarray:
    """K: each row of L divided by the absolute value of its mean over the vocabulary.

    L_padding: the logits of the LM head's padding rows [T, V_pad − V]; given, the mean runs over
    all V_pad columns (the thesis's K: 50,280 columns for Mamba-130m), K still over L's columns.
    """
    L = np.asarray(L, dtype=np.float64)
    columns = L if L_padding is None else np.concatenate([L, np.asarray(L_padding, dtype=np.float64)], axis=-1)
    return L / np.abs(columns.mean(axis=-1, keepdims=True))


def softmax(L: np.ndarray) -> np.ndarray:
    """P: softmax over the last axis, computed in float64 after subtracting the row maximum."""
    L = np.asarray(L, dtype=np.float64)
    e = np.exp(L - L.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def argmax(L: np.ndarray) -> np.ndarray:
    """The predicted ID per row (ties go to the lowest ID, as in numpy and torch)."""
    return np.asarray(L).argmax(axis=-1)


def top_k(P: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """IDs and probabilities of the k most probable tokens per row, most probable first: [T, k]."""
    P = np.asarray(P)
    # a copy, not a view: a view of the [T, V] argsort would keep all of it alive with the result
    ids = np.argsort(-P, axis=-1, kind="stable")[..., :k].copy()
    return ids, np.take_along_axis(P, ids, axis=-1)


def shared_vocabulary(texts_a: Sequence[str], texts_b: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Indices (ids_a, ids_b) of the token strings both vocabularies hold exactly once.

    A string that several IDs decode to (byte fragments all decode to U+FFFD) names no single
    token, so it is left out rather than matched arbitrarily.
    """
    def unique_ids(texts):
        seen: dict[str, int] = {}
        repeated = set()
        for i, text in enumerate(texts):
            if text in seen:
                repeated.add(text)
            seen[text] = i
        return {t: i for t, i in seen.items() if t not in repeated}

    a, b = unique_ids(texts_a), unique_ids(texts_b)
    shared = [t for t in a if t in b]
    return (np.array([a[t] for t in shared], dtype=np.int64),
            np.array([b[t] for t in shared], dtype=np.int64))


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen–Shannon divergence in bits (0 ≤ JS ≤ 1) between rows of p and q, same columns.

    Each row is renormalised first, so p and q may be probabilities restricted to shared tokens.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p = p / p.sum(axis=-1, keepdims=True)
    q = q / q.sum(axis=-1, keepdims=True)
    m = (p + q) / 2

    def kl(x):  # 0 · log(0 / m) = 0
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(x > 0, x * np.log2(x / m), 0.0).sum(axis=-1)

    return np.clip((kl(p) + kl(q)) / 2, 0.0, 1.0)


def period(ids: Sequence[int]) -> int | None:
    """The smallest p with ids[t] == ids[t - p] for all t ≥ p, if the pattern shows twice (2p ≤ T)."""
    ids = list(ids)
    for p in range(1, len(ids) // 2 + 1):
        if all(ids[t] == ids[t - p] for t in range(p, len(ids))):
            return p
    return None


def continuation(ids: Sequence[int], p: int) -> np.ndarray:
    """The pattern's next token after each position: ids[t + 1], and ids[T - p] after the last."""
    ids = list(ids)
    return np.array(ids[1:] + [ids[len(ids) - p]], dtype=np.int64)


def lock_in(prediction_ids: Sequence[int], expected_ids: Sequence[int]) -> int | None:
    """The first position from which every prediction equals the expected token; None if never."""
    pred = np.asarray(prediction_ids)
    wrong = np.flatnonzero(pred != np.asarray(expected_ids))
    if len(wrong) == 0:
        return 0
    last_wrong = int(wrong[-1])
    return None if last_wrong == len(pred) - 1 else last_wrong + 1


def k_stats(K: np.ndarray) -> pd.DataFrame:
    """Per row: mean, variance (population) and skew (Fisher–Pearson, biased) of K."""
    K = np.asarray(K, dtype=np.float64)
    mean = K.mean(axis=-1)
    centred = K - mean[:, None]
    variance = (centred ** 2).mean(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = (centred ** 3).mean(axis=-1) / variance ** 1.5
    return pd.DataFrame({"position": np.arange(len(K)), "mean": mean, "variance": variance, "skew": skew})


def tail_outliers(k_row: np.ndarray, z: float = 4.0) -> np.ndarray:
    """IDs in the upper tail of one K row, highest K first.

    A token is in the tail when its robust z-score (K − median) / (1.4826 · MAD) exceeds `z`;
    median and MAD describe the bulk without being dragged by the tail itself, so a bump of many
    tokens (Mamba's whitespace/newline tokens in the thesis) shows as many outliers, while a
    light-tailed row (GPT-2) gives only its few top predictions. Falls back to the standard
    deviation when more than half the row is tied (MAD = 0).
    """
    k_row = np.asarray(k_row, dtype=np.float64)
    centre = np.median(k_row)
    scale = 1.4826 * np.median(np.abs(k_row - centre))
    if scale == 0:
        scale = k_row.std()
    if scale == 0:
        return np.array([], dtype=np.int64)
    ids = np.flatnonzero((k_row - centre) / scale > z)
    return ids[np.argsort(-k_row[ids], kind="stable")]


# A Gaussian bulk of 50k tokens leaves about 2 tokens beyond 4 robust σ, so 10 is a cluster.
BUMP_MIN_SIZE = 10


def tail_bump(k_row: np.ndarray, z: float = 4.0, min_size: int = BUMP_MIN_SIZE) -> bool:
    """Whether the row's tail holds a bump: at least `min_size` outliers (see `tail_outliers`)."""
    return len(tail_outliers(k_row, z)) >= min_size


def variance_trend(variances: Sequence[float]) -> dict[str, float]:
    """Least-squares line of K's variance against position: slope, intercept and Pearson r."""
    v = np.asarray(variances, dtype=np.float64)
    t = np.arange(len(v), dtype=np.float64)
    if len(v) < 2:
        return {"slope": math.nan, "intercept": float(v[0]) if len(v) else math.nan, "r": math.nan}
    slope, intercept = np.polyfit(t, v, 1)
    r = pearson(t, v)
    return {"slope": float(slope), "intercept": float(intercept), "r": r}


def id_logit_correlation(L: np.ndarray) -> pd.DataFrame:
    """Result 2 of the thesis, per row of L [T, V]: Pearson r between token ID and logit.

    r_id_L: r(ID, L[t]) over the V columns; r_logid_L: r(log(1 + ID), L[t]) (log1p, as in
    `tokenizer_stats`, so ID 0 is defined). Negative r: lower IDs get higher logits.
    """
    L = np.asarray(L, dtype=np.float64)
    ids = np.arange(L.shape[-1], dtype=np.float64)
    centred = L - L.mean(axis=-1, keepdims=True)
    norm = np.sqrt((centred ** 2).sum(axis=-1))

    def r(x):
        x = x - x.mean()
        with np.errstate(divide="ignore", invalid="ignore"):  # a product-sum, not BLAS: see position_distance
            return (centred * x).sum(axis=-1) / (norm * np.sqrt((x ** 2).sum()))

    return pd.DataFrame({"position": np.arange(len(L)), "r_id_L": r(ids), "r_logid_L": r(np.log1p(ids))})


def row_moments(L: np.ndarray) -> pd.DataFrame:
    """Per row of L [T, V]: its mean `L_mean` and (population) standard deviation `L_std`.

    The literal reading of the thesis's Conclusion 5 ("values within a row differ much less than
    between rows", the blocks of Figs. 24–25) compares L_std with the spread of L_mean over
    positions; the reading across models is `row_distance` / `position_distance`.
    """
    L = np.asarray(L, dtype=np.float64)
    return pd.DataFrame({"position": np.arange(len(L)), "L_mean": L.mean(axis=-1), "L_std": L.std(axis=-1)})


def row_distance(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Root-mean-square distance between matching rows of X and Y [N, V]: sqrt(mean_v (X − Y)²), [N]."""
    diff = np.asarray(X, dtype=np.float64) - np.asarray(Y, dtype=np.float64)
    return np.sqrt((diff ** 2).mean(axis=-1))


def position_distance(X: np.ndarray) -> np.ndarray:
    """Each row's mean `row_distance` to the other rows of X [N, V], [N] (NaN for one row).

    Conclusion 5's within-model term: how far one position's row of L lies from the others.
    """
    X = np.asarray(X, dtype=np.float64)
    X = X - X.mean(axis=0)  # distances ignore a shift common to all rows; centring spares the
    sq = (X ** 2).mean(axis=-1)  # Gram identity below cancelling large logits (L ~ −100) to rounding
    # |x − y|² = |x|² + |y|² − 2 x·y, clipped at 0 against rounding on (near-)equal rows. The Gram
    # matrix is a torch matmul: its rounding depends on the thread count, which torch lets a caller
    # fix (a study does, so executors agree to the bit); numpy's BLAS picks its own threads.
    gram = torch.from_numpy(X) @ torch.from_numpy(X).T
    pairwise = np.sqrt(np.clip(sq[:, None] + sq[None, :] - 2 * gram.numpy() / X.shape[-1], 0, None))
    n = len(X)
    return pairwise.sum(axis=-1) / (n - 1) if n > 1 else np.full(n, np.nan)


def pearson(x, y) -> float:
    """Pearson r of two equal-length sequences, in float64; NaN when either is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x = x - x.mean()
    y = y - y.mean()
    denominator = math.sqrt(float((x ** 2).sum() * (y ** 2).sum()))
    return float((x * y).sum() / denominator) if denominator > 0 else math.nan


def spearman(x, y) -> float:
    """Spearman r: `pearson` of the ranks, ties given their average rank (as scipy's spearmanr)."""
    return pearson(*(pd.Series(np.asarray(v, dtype=np.float64)).rank() for v in (x, y)))


def token_lengths(tokenizer: Any, text: str | None = None) -> pd.DataFrame:
    """ID, text and decoded length (characters) of each token of `text`, else of the vocabulary.

    Over `text`, every occurrence counts; over the vocabulary, every ID 0 .. len(tokenizer) − 1.
    """
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a `Model` handle works too
    if text is None:
        ids = list(range(len(tokenizer)))
    elif isinstance(text, str) and text:
        ids = list(tokenizer.encode(text, add_special_tokens=False))
    else:
        raise ValueError(f"text: must be a non-empty string or None (the whole vocabulary), got {text!r}")
    return length_table(ids, token_texts(tokenizer, ids))


def length_table(ids: Sequence[int], texts: Sequence[str]) -> pd.DataFrame:
    """The `token_lengths` table of IDs whose texts are already decoded (`vocabularies.token_texts`)."""
    return pd.DataFrame({"id": np.array(ids, dtype=np.int64), "token": list(texts),
                         "length": np.array([len(t) for t in texts], dtype=np.int64)})


def tokenizer_stats(tokenizer: Any, text: str | None = None) -> dict[str, float | int]:
    """Pearson r between token ID and decoded length, linear (`r_id_len`) and log (`r_logid_len`).

    log uses log(1 + ID), so ID 0 is defined. Over the tokens of `text` when given, else over the
    whole vocabulary. Counts: `n_tokens` (tokens measured) and `n_vocab` (the vocabulary size).
    """
    table = token_lengths(tokenizer, text)
    return {**length_correlations(table), "n_tokens": len(table),
            "n_vocab": len(getattr(tokenizer, "tokenizer", tokenizer))}


def length_correlations(table: pd.DataFrame) -> dict[str, float]:
    """`r_id_len` and `r_logid_len` of a table with columns id and length (see `token_lengths`)."""
    ids = table["id"].to_numpy(dtype=np.float64)
    lengths = table["length"].to_numpy(dtype=np.float64)
    return {"r_id_len": pearson(ids, lengths), "r_logid_len": pearson(np.log1p(ids), lengths)}
