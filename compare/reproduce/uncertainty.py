"""How sure each number is: the words the report writes beside it (n and an interval, a test or a spread).

Every number of a "measured here" cell carries `n` (what it summarises) and one of these texts:
a 95 % interval (a correlation's Fisher z interval, a bootstrap), a test (a slope's t test), a spread
over several draws, or `EXACT` for a deterministic quantity (a count of tokens, one forward pass),
which has no sampling error to state.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

EXACT = "exact: deterministic, no sampling error"
Z95 = 1.959963984540054


def fisher_ci(r: float, n: int) -> tuple[float, float] | None:
    """95 % interval of a Pearson r over n pairs by Fisher's z (None where n < 4 or r is not finite)."""
    if r is None or not math.isfinite(r) or n < 4:
        return None
    z, half = math.atanh(max(-0.999999, min(0.999999, r))), Z95 / math.sqrt(n - 3)
    return math.tanh(z - half), math.tanh(z + half)


def correlation(r: float, n: int) -> str:
    ci = fisher_ci(r, n)
    if ci is None:
        return f"no interval: r is {r} over n = {n} pairs (n ≥ 4 and a finite r are needed)"
    return f"95 % CI [{ci[0]:.2f}, {ci[1]:.2f}] (Fisher z)"


def slope(x, y) -> tuple[float, float, float, str]:
    """(slope, r, p, text): least-squares slope of y on x and its two-sided t test of slope = 0."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0:
        return float("nan"), float("nan"), float("nan"), f"no test: n = {len(x)} points (3 are needed)"
    fit = stats.linregress(x, y)
    p = float(fit.pvalue)
    return float(fit.slope), float(fit.rvalue), p, (f"p = {p:.2g} (t test of slope = 0, n = {len(x)}): "
                                                    + ("a trend" if p < 0.05 else "no trend distinguishable "
                                                       "from none at 5 %"))


def spread(values) -> str:
    """The spread of a value over several draws: mean ± standard deviation, range."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return "no draw gave a value"
    if len(v) == 1:
        return "one draw: no spread measurable"
    return (f"over {len(v)} draws: mean {v.mean():.3g} ± {v.std(ddof=1):.2g} (sd), "
            f"range [{v.min():.3g}, {v.max():.3g}]")


def binomial_ci(hits: int, n: int) -> str:
    """95 % Wilson interval of a rate of `hits` in `n` trials."""
    if n == 0:
        return "no trials"
    p, z2 = hits / n, Z95 ** 2
    centre, half = (p + z2 / (2 * n)) / (1 + z2 / n), Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return f"95 % CI [{max(0.0, centre - half):.2f}, {min(1.0, centre + half):.2f}] (Wilson, {hits} of {n})"


def mean_se(values, what: str = "positions") -> str:
    """A mean over deterministic items (positions, pairs): their standard error and range, not a sampling CI."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) < 2:
        return f"{len(v)} {what}: no spread"
    return (f"± {v.std(ddof=1) / math.sqrt(len(v)):.2g} (standard error over {len(v)} {what}), "
            f"range [{v.min():.3g}, {v.max():.3g}]")
