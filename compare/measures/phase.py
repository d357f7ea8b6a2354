"""Phase transitions of a noise sweep: where, and how sharply, the prediction stops surviving.

Per (model, layer, component) the hits of `noise.noise_sweep` are fitted by maximum likelihood
with the logistic curve

    p(hit | level) = 1 / (1 + exp((level - c) / w))

c is the critical level (hit rate 0.5) and w the scale; the reported `width` is the span of
levels from a 90 % to a 10 % hit rate, 2·ln 9·w. The fit is the logistic regression
logit p = a + b·x on x = level / max(level), so c = -a/b·max and w = -1/b·max.

A sharp transition with few trials separates hits from misses perfectly and the plain MLE runs
off to w → 0; a weak ridge on the slope b (`ridge`) keeps it finite, putting c between the
last hit and the first miss.

The confidence interval is an expanded percentile bootstrap (`expanded_tail`) with an explicit
seed, widened out to the nearest swept levels (no interval is finer than the sweep's step). It
resamples the independent unit of the sweep (`draws`, from ``df.attrs["draws"]``, which
`noise_sweep` sets, or the `draws` column of a study's rows):
    fresh  every run has its own ε, so every (level, trial) row is an independent Bernoulli
           draw: rows are resampled.
    ray    a trial's ε is shared by all its levels, so its hits are one walk along one
           direction, crossing the transition (about) once: the trial is the unit, whole hit
           curves are resampled. With fewer than MIN_RAY_TRIALS rays no bootstrap covers (one
           ray is one threshold): the estimate is kept, the interval is NaN and the status says
           why (`ci_unreliable`).
On simulated sweeps (tests/unit/test_phase_coverage.py) the 95 % interval covers a known midpoint in
≥ 90 % of experiments in both modes, sharp to wide transitions.

A study's rows (`compare.study`, columns `prompt_index` and `draws`) hold several prompts' sweeps:
each prompt is fitted on its own, and the result leads with `prompt_index`.

Groups that never flip get no fit: status "always_hit" (c = +inf) or "never_hit" (the clean
prediction already misses; c = NaN). Groups whose hits cannot place a falling curve inside the
sweep get a "not estimable: ..." status (`NOT_ESTIMABLE`) or "beyond range" (the fitted 0.5 point
lies outside the swept levels), with NaN estimate, interval and width, never a number the data do
not support. Malformed input (hits that are not booleans, levels that are not finite numbers
≥ 0) is refused with a ValueError naming the column.

Runs that overflowed (`finite` False: the noise drove the logits to NaN or infinity, see
`prediction`) are misses: the prediction did not survive. They are fitted as hit = False, and
each group's `overflowed` column counts them (0 for a frame without a `finite` column), next
to `n`; ``fits.attrs["overflowed"]`` is the total and ``fits.attrs["level_range"]`` the swept
(lowest, highest) level, for a figure to say where no layer crossed.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import minimize
from scipy.special import expit

SPREAD_10_90 = 2 * np.log(9.0)
GROUP = ["model", "layer", "component"]
COLUMNS = GROUP[:2] + ["kind"] + GROUP[2:] + ["critical_level", "ci_low", "ci_high", "width", "status", "n", "overflowed"]
DRAWS = ("fresh", "ray")
NOT_ESTIMABLE = {
    "one_level": "not estimable: one level",
    "rising": "not estimable: hit rises with noise",
    "lowest_only": "not estimable: only the lowest level hits",
}
BEYOND_RANGE = "beyond range"
# Fewest rays whose bootstrap over trials covered ≥ 90 % in the simulation (92–95 % at 8, sharp
# to wide). Below 6 no interval resting on the rays alone can: the median threshold lies between
# the extremes of n rays with probability only 1 − 2·0.5^n (87.5 % at n = 4, 50 % at n = 2).
MIN_RAY_TRIALS = 8
NEWTON_STEPS, HALVINGS, NEWTON_TOL = 100, 30, 1e-12


def phase_transition(df: pd.DataFrame, *, draws: str | None = None, n_boot: int = 200, confidence: float = 0.95,
                     seed: int = 0, ridge: float = 1e-3) -> pd.DataFrame:
    """One row per (model, layer, component) of a noise-sweep frame; columns `COLUMNS` (`kind`: the
    layer's kind as the frame gives it, None for a frame without a `kind` column).

    draws: how the sweep drew its noise, "fresh" or "ray" (see the module docstring); default
    ``df.attrs["draws"]``, else the frame's `draws` column (a study's rows), else "ray" (sweeps
    before `draws` existed were rays).
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df: must be a pandas DataFrame from noise_sweep, got {type(df).__name__}")
    missing = {"level", "hit", "trial", *GROUP} - set(df.columns)
    if missing:
        raise ValueError(f"df lacks columns {sorted(missing)}; pass the frame noise_sweep returns")
    if df.empty:
        raise ValueError("df: no rows; pass the frame noise_sweep returns")
    draws = _draws(df) if draws is None else draws
    if draws not in DRAWS:
        raise ValueError(f"draws must be one of {DRAWS} (or None: df.attrs['draws']), got {draws!r}")
    group = ["prompt_index", *GROUP] if "prompt_index" in df.columns else GROUP
    finite = _hits(df["finite"], "finite") if "finite" in df.columns else np.ones(len(df), bool)
    df = df.assign(level=_levels(df["level"]), hit=_hits(df["hit"]) & finite, overflowed=~finite)
    if not isinstance(confidence, (int, float, np.number)) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
    if not isinstance(n_boot, (int, np.integer)) or isinstance(n_boot, bool) or n_boot < 1:
        raise ValueError(f"n_boot must be an int >= 1, got {n_boot!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed: must be an integer ≥ 0, got {seed!r}")
    rng = np.random.default_rng(seed)
    out = []
    for key, rows in df.groupby(group, sort=True):
        out.append(dict(zip(group, key)) | _transition(rows, draws, n_boot, confidence, rng, ridge)
                   | {"overflowed": int(rows["overflowed"].sum())})
    fits = pd.DataFrame(out, columns=group[:-len(GROUP)] + COLUMNS)
    # the layer's kind rides along from the sweep; frames from before it existed have none
    kinds = df.groupby(["model", "layer"])["kind"].first() if "kind" in df.columns else None
    fits["kind"] = (None if kinds is None else
                    [kinds.get((m, l)) for m, l in zip(fits["model"], fits["layer"])])
    fits.attrs.update(overflowed=int(df["overflowed"].sum()), level_range=(float(df["level"].min()),
                                                                         float(df["level"].max())))
    return fits


def _draws(df: pd.DataFrame) -> str:
    """The sweep's `draws`: its attrs, else its one `draws` value (a study's rows), else "ray"."""
    if "draws" in df.attrs:
        return df.attrs["draws"]
    if "draws" not in df.columns:
        return "ray"
    values = df["draws"].unique()
    if len(values) != 1:
        raise ValueError(f"df['draws']: the rows mix draws {sorted(map(str, values))}; fit each kind on its own, "
                         "or pass draws=")
    return values[0]


def _levels(level: pd.Series) -> np.ndarray:
    """The `level` column as floats, refusing anything but finite numbers ≥ 0."""
    if not pd.api.types.is_numeric_dtype(level) or pd.api.types.is_bool_dtype(level):
        raise ValueError(f"df['level']: must hold numbers (noise levels ≥ 0), got dtype {level.dtype}")
    values = level.to_numpy(float)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        raise ValueError(f"df['level']: noise levels must be finite and ≥ 0, got {values[bad][:5].tolist()}")
    return values


def _hits(hit: pd.Series, name: str = "hit") -> np.ndarray:
    """A column of booleans (`hit`, `finite`); True/False or 1/0 only (a string such as "False" is truthy)."""
    if pd.api.types.is_bool_dtype(hit) and not hit.isna().any():
        return hit.to_numpy(bool)
    values = hit.to_numpy(object)
    numbers = (bool, int, float, np.bool_, np.integer, np.floating)
    bad = [v for v in values if not isinstance(v, numbers) or np.isnan(v) or v not in (0, 1)]
    if bad:
        raise ValueError(f"df[{name!r}]: must be True/False (or 1/0), got {bad[:5]}")
    return values.astype(bool)


def fit_logistic(level: np.ndarray, hit: np.ndarray, weights: np.ndarray | None = None,
                 ridge: float = 1e-3, start: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(c, w) of the penalised maximum-likelihood logistic fit, one pair per row of `weights`.

    level, hit: [N]; weights: [R, N] row weights (bootstrap counts), default one fit with every
    row once. Returns c, w: [R] each; NaN where the weighted hits do not fall with noise (b ≥ 0)
    or hold one class only (no finite fit). All R fits run together: damped Newton on the
    concave penalised log-likelihood (2 parameters, so each step solves a 2 × 2 system).
    start: (c, w) to start from, e.g. the full-data fit for its bootstrap resamples (the optimum
    is unique, so only the number of steps depends on it).
    `fit_logistic_ref` is the same fit, one scipy BFGS call per row.
    """
    x, y, top = _scaled(level, hit)
    W = np.ones((1, len(x))) if weights is None else np.atleast_2d(np.asarray(weights, float))
    # the loss is a sum over rows of a function of (x, y): rows sharing both add their weights,
    # so a fit costs distinct (level, hit) cells (≤ 2 per level), not rows
    cells, row_cell = np.unique(np.stack([x, y], 1), axis=0, return_inverse=True)
    x_c, y_c = cells[:, 0], cells[:, 1]
    W_c = W @ (row_cell.reshape(-1, 1) == np.arange(len(cells)))  # [R, cells]
    a0, b0 = (0.0, -1.0) if start is None else (start[0] / start[1], -top / start[1])  # (0, -1): the reference's
    theta = np.tile([a0, b0], (len(W), 1))
    active = np.arange(len(W))
    current = _penalised_nll(theta, x_c, y_c, W_c, ridge)
    for _ in range(NEWTON_STEPS):
        th, Wa = theta[active], W_c[active]
        p = expit(th[:, :1] + th[:, 1:] * x_c)
        r, s = Wa * (p - y_c), Wa * p * (1 - p)
        g_a, g_b = r.sum(1), (r * x_c).sum(1) + ridge * th[:, 1]
        # the ridge makes h_bb > 0; h_aa may vanish on one-class resamples, which are dropped below
        h_aa, h_ab, h_bb = s.sum(1) + 1e-12, (s * x_c).sum(1), (s * x_c * x_c).sum(1) + ridge
        det = h_aa * h_bb - h_ab ** 2
        step = np.stack([(h_bb * g_a - h_ab * g_b) / det, (h_aa * g_b - h_ab * g_a) / det], 1)
        # done: the Newton decrement g·H⁻¹g (what a full step could still gain) is below rounding
        going = g_a * step[:, 0] + g_b * step[:, 1] > NEWTON_TOL * (1 + np.abs(current[active]))
        active, th, Wa, step = active[going], th[going], Wa[going], step[going]
        if not active.size:
            break
        t, loss = np.ones(len(th)), current[active]
        for _ in range(HALVINGS):  # backtrack each fit until its loss does not rise
            candidate = th - t[:, None] * step
            loss = _penalised_nll(candidate, x_c, y_c, Wa, ridge)
            worse = ~(loss <= current[active])
            if not worse.any():
                break
            t[worse] /= 2
        better = loss <= current[active]  # a fit no halving improves has reached rounding: it stops
        active = active[better]
        theta[active], current[active] = candidate[better], loss[better]
    return _to_cw(theta[:, 0], theta[:, 1], top, W, y)


def fit_logistic_ref(level: np.ndarray, hit: np.ndarray, weights: np.ndarray | None = None,
                     ridge: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """`fit_logistic`, one scipy BFGS minimisation per row of `weights`: the obvious twin."""
    x, y, top = _scaled(level, hit)
    W = np.ones((1, len(x))) if weights is None else np.atleast_2d(np.asarray(weights, float))
    theta = np.empty((len(W), 2))
    for i, w in enumerate(W):
        def loss(ab, w=w):
            a, b = ab
            z = a + b * x
            p = expit(z)
            grad = np.array([np.sum(w * (p - y)), np.sum(w * (p - y) * x) + ridge * b])
            return np.sum(w * (np.logaddexp(0, z) - y * z)) + 0.5 * ridge * b * b, grad
        theta[i] = minimize(loss, np.array([0.0, -1.0]), jac=True, method="BFGS").x
    return _to_cw(theta[:, 0], theta[:, 1], top, W, y)


def _scaled(level, hit) -> tuple[np.ndarray, np.ndarray, float]:
    """x = level / max(level) (so the ridge on b means the same for any level range), y, max."""
    level, y = np.asarray(level, float), np.asarray(hit, float)
    top = level.max() if level.max() > 0 else 1.0
    return level / top, y, top


def _penalised_nll(theta, x, y, W, ridge) -> np.ndarray:
    """-log-likelihood of Bernoulli(sigmoid(a + b·x)) per row of W, plus ridge·b²/2; [R]."""
    z = theta[:, :1] + theta[:, 1:] * x
    return (W * (np.logaddexp(0, z) - y * z)).sum(1) + 0.5 * ridge * theta[:, 1] ** 2


def _to_cw(a, b, top, W, y) -> tuple[np.ndarray, np.ndarray]:
    """c = -a/b·max and w = -1/b·max; NaN where hits do not fall (b ≥ 0) or one class only."""
    used = W > 0
    one_class = ~(used & (y > 0)).any(1) | ~(used & (y == 0)).any(1)
    bad = (b >= 0) | one_class
    with np.errstate(divide="ignore", invalid="ignore"):
        c, w = np.where(bad, np.nan, -a / b * top), np.where(bad, np.nan, -1 / b * top)
    return c, w


def _transition(group: pd.DataFrame, draws: str, n_boot: int, confidence: float, rng, ridge: float) -> dict:
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
    (c,), (w,) = fit_logistic(level, hit, ridge=ridge)
    if np.isnan(c):
        return base | {"status": NOT_ESTIMABLE["rising"]}
    if not level.min() <= c <= level.max():
        return base | {"status": BEYOND_RANGE}
    fit = base | {"critical_level": c, "width": SPREAD_10_90 * w, "status": "fit"}
    # the independent unit: a whole ray (its hits share one ε), or each run of fresh draws
    units = np.unique(trial, return_inverse=True)[1] if draws == "ray" else np.arange(len(level))
    n_units = units.max() + 1
    if draws == "ray" and n_units < MIN_RAY_TRIALS:
        return fit | {"status": ci_unreliable(n_units)}
    counts = rng.multinomial(n_units, np.full(n_units, 1 / n_units), size=n_boot)  # [n_boot, units]
    boots, _ = fit_logistic(level, hit, counts[:, units], ridge, start=(c, w))
    if not np.isfinite(boots).any():
        return fit
    tail = expanded_tail(confidence, n_units) * 100
    low, high = np.nanpercentile(boots, [tail, 100 - tail])
    # hits are seen only at the swept levels, so no interval can be finer than the step between
    # two of them: widen each end out to the nearest level (sharp rays otherwise all cross in
    # one step and every resample gives the same midpoint, a zero-width interval)
    swept = np.unique(level)
    below, above = swept[swept <= low], swept[swept >= high]
    low, high = below.max() if below.size else low, above.min() if above.size else high
    return fit | {"ci_low": low, "ci_high": high}


def expanded_tail(confidence: float, n_units: int) -> float:
    """The tail probability of each end of the expanded percentile interval (Hesterberg 2015).

    A percentile bootstrap of n units is too narrow by about sqrt((n − 1)/n) and uses z where
    Student's t belongs; widening the percentiles to Φ(−sqrt(n/(n − 1)) · t_{n−1}) undoes
    both. It matters for a few rays (8 rays: 0.6 % instead of 2.5 %), hardly for hundreds of
    fresh runs.
    """
    t = stats.t.ppf((1 + confidence) / 2, n_units - 1)
    return float(stats.norm.cdf(-np.sqrt(n_units / (n_units - 1)) * t))


def ci_unreliable(n_trials: int) -> str:
    """The status of a ray sweep with too few trials for a bootstrap over trials to cover."""
    return (f"ci unreliable: {n_trials} trial{'s' if n_trials != 1 else ''} of rays, need ≥ {MIN_RAY_TRIALS} "
            "(each ray crosses the transition once; use draws='fresh' or more trials)")
