"""Phase transitions of a noise sweep: where, and how sharply, the prediction stops surviving.

Per (model, layer, component) the hits of `noise.noise_sweep` are fitted by maximum likelihood
with the logistic curve

    p(hit | level) = 1 / (1 + exp((level - c) / w))

c is the critical level (hit rate 0.5) and w the scale; the reported `width` is the span of
levels from a 90 % to a 10 % hit rate, 2·ln 9·w. The fit is the logistic regression
logit p = a + b·x on x = level / max(level), so c = -a/b·max and w = -1/b·max.

A sharp transition with few trials separates hits from misses perfectly and the plain MLE runs
off to w → 0; a weak ridge on the slope b (`ridge`) keeps it finite, putting c between the
last hit and the first miss. The confidence interval is a percentile bootstrap with an explicit
seed: whole trials are resampled when there are several (each trial is one noise direction,
the independent unit), single (level, hit) rows otherwise.

Groups that never flip get no fit: status "always_hit" (c = +inf) or "never_hit" (the clean
prediction already misses; c = NaN). Groups whose hits cannot place a falling curve inside the
sweep get a "not estimable: ..." status (`NOT_ESTIMABLE`) or "beyond range" (the fitted 0.5 point
lies outside the swept levels), with NaN estimate, interval and width, never a number the data do
not support. Malformed input (hits that are not booleans, levels that are not finite numbers
≥ 0) is refused with a ValueError naming the column.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize

SPREAD_10_90 = 2 * np.log(9.0)
GROUP = ["model", "layer", "component"]
COLUMNS = GROUP + ["critical_level", "ci_low", "ci_high", "width", "status", "n"]
NOT_ESTIMABLE = {
    "one_level": "not estimable: one level",
    "rising": "not estimable: hit rises with noise",
    "lowest_only": "not estimable: only the lowest level hits",
}
BEYOND_RANGE = "beyond range"


def phase_transition(df: pd.DataFrame, *, n_boot: int = 200, confidence: float = 0.95, seed: int = 0,
                     ridge: float = 1e-3) -> pd.DataFrame:
    """One row per (model, layer, component) of a noise-sweep frame; columns `COLUMNS`."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df: must be a pandas DataFrame from noise_sweep, got {type(df).__name__}")
    missing = {"level", "hit", "trial", *GROUP} - set(df.columns)
    if missing:
        raise ValueError(f"df lacks columns {sorted(missing)}; pass the frame noise_sweep returns")
    if df.empty:
        raise ValueError("df: no rows; pass the frame noise_sweep returns")
    df = df.assign(level=_levels(df["level"]), hit=_hits(df["hit"]))
    if not isinstance(confidence, (int, float, np.number)) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
    if not isinstance(n_boot, (int, np.integer)) or isinstance(n_boot, bool) or n_boot < 1:
        raise ValueError(f"n_boot must be an int >= 1, got {n_boot!r}")
    rng = np.random.default_rng(seed)
    out = []
    for key, group in df.groupby(GROUP, sort=True):
        out.append(dict(zip(GROUP, key)) | _transition(group, n_boot, confidence, rng, ridge))
    return pd.DataFrame(out, columns=COLUMNS)


def _levels(level: pd.Series) -> np.ndarray:
    """The `level` column as floats, refusing anything but finite numbers ≥ 0."""
    if not pd.api.types.is_numeric_dtype(level) or pd.api.types.is_bool_dtype(level):
        raise ValueError(f"df['level']: must hold numbers (noise levels ≥ 0), got dtype {level.dtype}")
    values = level.to_numpy(float)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        raise ValueError(f"df['level']: noise levels must be finite and ≥ 0, got {values[bad][:5].tolist()}")
    return values


def _hits(hit: pd.Series) -> np.ndarray:
    """The `hit` column as booleans; True/False or 1/0 only (a string such as "False" is truthy)."""
    if pd.api.types.is_bool_dtype(hit) and not hit.isna().any():
        return hit.to_numpy(bool)
    values = hit.to_numpy(object)
    numbers = (bool, int, float, np.bool_, np.integer, np.floating)
    bad = [v for v in values if not isinstance(v, numbers) or np.isnan(v) or v not in (0, 1)]
    if bad:
        raise ValueError(f"df['hit']: must be True/False (or 1/0), got {bad[:5]}")
    return values.astype(bool)


def fit_logistic(level: np.ndarray, hit: np.ndarray, ridge: float = 1e-3) -> tuple[float, float]:
    """(c, w) of the penalised maximum-likelihood logistic fit; needs both hits and misses."""
    level, hit = np.asarray(level, float), np.asarray(hit, float)
    top = level.max() if level.max() > 0 else 1.0
    x = level / top

    def loss(theta):
        a, b = theta
        z = a + b * x
        # -log-likelihood of Bernoulli(sigmoid(z)), written with logaddexp to stay finite
        nll = np.sum(np.logaddexp(0, z) - hit * z)
        p = 1 / (1 + np.exp(-z))
        grad = np.array([np.sum(p - hit), np.sum((p - hit) * x) + ridge * b])
        return nll + 0.5 * ridge * b * b, grad

    a, b = minimize(loss, np.array([0.0, -1.0]), jac=True, method="BFGS").x
    if b >= 0:  # hits do not fall with noise: no transition to speak of
        return np.nan, np.nan
    return -a / b * top, -1 / b * top


def _transition(group: pd.DataFrame, n_boot: int, confidence: float, rng, ridge: float) -> dict:
    level, hit, trial = group["level"].to_numpy(float), group["hit"].to_numpy(bool), group["trial"].to_numpy()
    base = {"n": len(group), "critical_level": np.nan, "ci_low": np.nan, "ci_high": np.nan, "width": np.nan}
    lowest = level == level.min()
    if lowest.all():  # no spread of levels: nothing to regress the hits on
        return base | {"status": NOT_ESTIMABLE["one_level"]}
    if hit.all():
        return base | {"critical_level": np.inf, "status": "always_hit"}
    if not hit[lowest].any():
        return base | {"status": "never_hit"}
    if not hit[~lowest].any():  # the transition lies below the first noisy level: unresolved
        return base | {"status": NOT_ESTIMABLE["lowest_only"]}
    c, w = fit_logistic(level, hit, ridge)
    if np.isnan(c):
        return base | {"status": NOT_ESTIMABLE["rising"]}
    if not level.min() <= c <= level.max():
        return base | {"status": BEYOND_RANGE}
    boots = np.array([_resample_fit(level, hit, trial, rng, ridge) for _ in range(n_boot)])
    tail = (1 - confidence) / 2 * 100
    low, high = np.nanpercentile(boots, [tail, 100 - tail]) if np.isfinite(boots).any() else (np.nan, np.nan)
    return base | {"critical_level": c, "ci_low": low, "ci_high": high, "width": SPREAD_10_90 * w,
                   "status": "fit"}


def _resample_fit(level, hit, trial, rng, ridge) -> float:
    units = np.unique(trial)
    if len(units) > 1:
        pick = rng.choice(units, size=len(units))
        rows = np.concatenate([np.flatnonzero(trial == u) for u in pick])
    else:
        rows = rng.integers(0, len(level), size=len(level))
    h = hit[rows]
    if h.all() or not h.any():  # a resample with one class has no finite MLE: skip it
        return np.nan
    return fit_logistic(level[rows], h, ridge)[0]
