"""Sections 3, 4 and 8: K distributions (Figs. 12–14), trajectories (Figs. 15–17, Table 1),
and the rows of L (Result 2, Conclusion 5), all from `compare` on the thesis's prompts."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from ..figures import base as figures, thesis as thesis_figures
from ..measures import metrics
from ..analyses.comparison import OUTLIER_Z, Comparison
from .context import Context
from .plan import MARY, REPEATED, TABLE1_POSITIONS
from .report import Section
from .uncertainty import EXACT, binomial_ci, correlation, mean_se, slope

BUMP_TOKENS_LISTED = 15


def k_distributions(ctx: Context) -> Section:
    s = Section(3, "k_distributions", "K distributions per position", "Figs. 12–14, Results 3–4")
    ioi, ioi_all = ctx.ioi("vocab"), ctx.ioi("all")
    runs = ioi.runs
    bump_rows, trend_rows, padding_rows, listed = [], [], [], []
    for name, run in runs.items():
        texts = ctx.vocab_texts(next(h for h in ctx.handles if h.name == name))
        outliers = [metrics.tail_outliers(row, OUTLIER_Z) for row in run.k]
        flat = [i for o in outliers for i in o]
        blank = sum(1 for i in flat if not texts[i].strip())
        bump_rows.append(s.add(f"bump_positions[{name}]", f"positions with a bump, {name}",
                               int(run.k_stats["tail_bump"].sum()),
                               "positions whose K row has at least BUMP_MIN_SIZE tokens beyond OUTLIER_Z robust σ "
                               "(metrics.tail_bump)", n=len(run.ids), uncertainty=EXACT, z=OUTLIER_Z,
                               min_size=metrics.BUMP_MIN_SIZE))
        bump_rows.append(s.add(f"bump_blank_share[{name}]", f"whitespace-only share of the tail, {name}",
                               blank / len(flat) if flat else None,
                               "of all tail tokens (every position), the fraction whose text is only spaces, "
                               "tabs or newlines", n=len(flat),
                               uncertainty=binomial_ci(blank, len(flat)) if flat else "not measured: no token in any tail",
                               z=OUTLIER_Z))
        for token, count in Counter(texts[i] for i in flat).most_common(BUMP_TOKENS_LISTED):
            listed.append({"model": name, "token": figures.token_label(token), "positions in the tail": count})
        for columns, comparison in (("vocab", ioi), ("all", ioi_all)):
            trend, variance = comparison.runs[name].variance_trend, comparison.runs[name].k_stats["variance"]
            _, _, p, test = slope(np.arange(len(variance)), variance)
            suffix = " (all columns)" if columns == "all" else ""
            trend_rows.append(s.add(f"variance_slope[{columns}|{name}]", f"slope, {name}{suffix}", trend["slope"],
                                    "least-squares slope of K's variance against position T (metrics.variance_trend)",
                                    n=len(variance), uncertainty=test, p_value=p, k_columns=columns))
            trend_rows.append(s.add(f"variance_r[{columns}|{name}]", f"r, {name}{suffix}", trend["r"],
                                    "Pearson r of K's variance against position T", n=len(variance),
                                    uncertainty=correlation(trend["r"], len(variance)), k_columns=columns))
        L_mean, L_std = run.logits.mean(axis=1), run.logits.std(axis=1)
        small = float(np.min(np.abs(L_mean) / L_std))
        trend_rows.append(s.add(f"min_abs_mean_over_std[{name}]", f"min |mean L| ÷ std L over positions, {name}",
                                small, "the smallest ratio over positions of |row mean of L| to the row's standard "
                                "deviation: below about 0.1, K = L / |mean L| is blown up at that position and its "
                                "variance says more about the divisor than about the distribution",
                                n=len(L_mean), uncertainty=EXACT, blown_up=small < 0.1))
        K_vocab, K_all = run.k.astype(np.float64), ioi_all.runs[name].k.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):  # a logit of exactly 0 gives 0/0 in its column only
            factor = np.abs(np.nanmedian(K_all / K_vocab, axis=1) - 1)
        padding_rows.append(s.add(f"k_all_vs_vocab_abs[{name}]", f"max |K_all − K_vocab|, {name}",
                                  float(np.max(np.abs(K_all - K_vocab))),
                                  "largest absolute difference of K between the mean over every LM-head row "
                                  "(padding included) and over the real vocabulary", n=K_vocab.size,
                                  uncertainty=EXACT, vocab_size=run.vocab_size))
        padding_rows.append(s.add(f"k_all_vs_vocab_rel[{name}]", f"max relative difference, {name}",
                                  float(np.max(factor)), "largest |K_all / K_vocab − 1| over positions (one factor "
                                  "per row: the ratio of the two means)", n=len(K_vocab), uncertainty=EXACT))
    s.row("Tail bump", "a bump of whitespace/newline tokens in Mamba's K (Figs. 12–13); none in GPT-2 (Fig. 14)",
          bump_rows)
    s.row("Variance of K against T", "grows with T in Mamba; constant in GPT-2", trend_rows)
    s.row("K over all 50,280 columns (as the thesis) vs the real vocabulary (this package's default)",
          "the thesis divides by the mean over every column (eq. 6)", padding_rows)
    tokens = {n: r.tokens for n, r in runs.items()}
    s.figure("ridgelines", figures.k_distributions({n: r.k for n, r in runs.items()}, tokens),
             "Histogram of K per position (log counts), K over the real vocabulary.")
    stats = pd.concat([r.k_stats.assign(model=n) for n, r in runs.items()], ignore_index=True)
    s.figure("variance", thesis_figures.variance_trend(stats, {n: r.variance_trend for n, r in runs.items()}),
             "Variance of K per position with its least-squares line.")
    s.frames["k_stats"] = stats.drop(columns=["outliers"]).assign(
        outliers=[list(o) for o in stats["outliers"]])
    s.frames["k_stats_all_columns"] = pd.concat([r.k_stats.drop(columns=["outliers"]).assign(model=n)
                                                 for n, r in ioi_all.runs.items()], ignore_index=True)
    s.table("tail_tokens", pd.DataFrame(listed, columns=["model", "token", "positions in the tail"]),
            f"the {BUMP_TOKENS_LISTED} tokens most often in the tail of K (beyond {OUTLIER_Z} robust σ), with the "
            "number of positions where they are")
    return s


def paired_position(comparison: Comparison, name: str, t: int) -> int | None:
    """The position of model `name` paired with the first model's position t (None: no pair)."""
    first = next(iter(comparison.runs))
    if name == first:
        return t if t < len(comparison.runs[name].ids) else None
    hit = comparison.cross[(comparison.cross["other"] == name) & (comparison.cross["position"] == t)]
    return None if hit.empty else int(hit["other_position"].iloc[0])


def trajectories(ctx: Context) -> Section:
    s = Section(4, "trajectories", "Trajectories of a tracked token", "Figs. 15–17, Table 1")
    ioi, rep = ctx.ioi(), ctx.repeated()
    p_rows, diff = [], []
    for name, run in ioi.runs.items():
        tr = run.tracked[MARY]
        for t in TABLE1_POSITIONS:
            u = paired_position(ioi, name, t)
            p = None if u is None else float(tr.P[u])
            rank = None if u is None else int((run.probs[u] > run.probs[u, tr.id]).sum() + 1)
            p_rows.append(s.add(f"p_mary[{name}|T={t}]", f"P at T = {t}, {name}", p,
                                f"P({MARY!r}) after reading up to the first model's position T (0-based)",
                                n=1, uncertainty=EXACT, position=t, paired_position=u))
            p_rows.append(s.add(f"rank_mary[{name}|T={t}]", f"rank at T = {t}, {name}", rank,
                                f"rank of {MARY!r} among all tokens by P at that position (1 = the prediction)",
                                n=run.vocab_size, uncertainty=EXACT, position=t))
    names = list(ioi.runs)
    at2 = [paired_position(ioi, n, 2) for n in names]
    if None not in at2:
        diff.append(s.add("p_mary_diff_T2", "|ΔP| at T = 2",
                          abs(float(ioi.runs[names[0]].tracked[MARY].P[at2[0]] - ioi.runs[names[1]].tracked[MARY].P[at2[1]])),
                          f"absolute difference between the two models' P({MARY!r}) at T = 2", n=2,
                          uncertainty=EXACT, position=2))
    s.row(f"P({MARY!r}) in the IOI prompt", f"high at T ∈ {set(TABLE1_POSITIONS)} in both models", p_rows)
    s.row("Table 1's preamble", "the two models' final probabilities mostly coincide", coincide(s, ioi, rep))
    s.row("the models at T = 2", "their P differ at T = 2", diff)
    rise = []
    for name, run in rep.runs.items():
        P = next(iter(run.tracked.values())).P
        peak = int(np.argmax(P))
        half = np.flatnonzero(P >= 0.5 * P.max())
        rise.append(s.add(f"p123_peak_position[{name}]", f"peak T, {name}", peak,
                          f"position of the largest P({REPEATED!r}) in the repeated prompt", n=len(P),
                          uncertainty=EXACT))
        rise.append(s.add(f"p123_half_position[{name}]", f"first T at half the peak, {name}", int(half[0]),
                          f"first position where P({REPEATED!r}) reaches half its largest value (how fast it rises)",
                          n=len(P), uncertainty=EXACT))
        rise.append(s.add(f"p123_peak[{name}]", f"peak P, {name}", float(P.max()), f"largest P({REPEATED!r})", n=len(P), uncertainty=EXACT))
    s.row(f"P({REPEATED!r}) in the repeated prompt", "rises until T ≈ 10, then falls; GPT-2's rises faster", rise)
    for comparison, stem, label in ((ioi, "ioi", MARY), (rep, "repeated", REPEATED)):
        K = {n: r.k for n, r in comparison.runs.items()}
        P = {n: r.probs for n, r in comparison.runs.items()}
        tracked = {n: next(iter(r.tracked.values())).id for n, r in comparison.runs.items()}
        s.figure(stem, thesis_figures.vocabulary_trajectories(K, P, tracked, {n: r.tokens for n, r in comparison.runs.items()},
                                                               label=label),
                 f"K and P of every vocabulary entry over the positions, {label!r} in red "
                 f"({'the IOI prompt' if stem == 'ioi' else 'the repeated prompt'}).")
        s.frames[f"tracked_{stem}"] = comparison.tracked_frame()
    return s


def coincide(s: Section, *comparisons: Comparison) -> list:
    """Table 1's preamble measured: Pearson r between the two models' P of the tracked token over the
    paired positions of each prompt (with its Fisher interval), and the mean |ΔP|."""
    out = []
    for comparison in comparisons:
        names = list(comparison.runs)
        label = next(iter(comparison.runs[names[0]].tracked))
        pairs = [(t, paired_position(comparison, names[1], t)) for t in range(len(comparison.runs[names[0]].ids))]
        pairs = [(t, u) for t, u in pairs if u is not None]
        a = np.array([comparison.runs[names[0]].tracked[label].P[t] for t, _ in pairs], dtype=float)
        b = np.array([next(iter(comparison.runs[names[1]].tracked.values())).P[u] for _, u in pairs], dtype=float)
        r = float(np.corrcoef(a, b)[0, 1]) if len(a) > 2 and a.std() > 0 and b.std() > 0 else None
        out.append(s.add(f"p_agreement_r[{label}]", f"r of the two models' P({label!r}) over positions", r,
                         "Pearson r between the two models' P of the tracked token at paired positions", n=len(a),
                         uncertainty=correlation(r, len(a)) if r is not None else "not defined: a P is constant"))
        out.append(s.add(f"p_agreement_diff[{label}]", f"mean |ΔP({label!r})|", float(np.abs(a - b).mean()),
                         "mean over paired positions of the absolute difference of the two models' P", n=len(a),
                         uncertainty=mean_se(np.abs(a - b), "paired positions")))
    return out


def rows_of_l(ctx: Context) -> Section:
    s = Section(8, "rows_of_l", "Within a row of L, and between rows", "Result 2, Conclusion 2, Conclusion 5")
    ioi = ctx.ioi()
    frame = ioi.to_frame()[["model", "position", "token", "r_id_L", "r_logid_L", "L_mean", "L_std"]]
    r_rows = []
    for name, g in frame.groupby("model", sort=False):
        for column, what in (("r_id_L", "the token ID"), ("r_logid_L", "log(1 + ID)")):
            r_rows.append(s.add(f"median_{column}[{name}]", f"median {column}, {name}", float(g[column].median()),
                                f"median over positions of the Pearson r between {what} and L within the row "
                                "(metrics.id_logit_correlation)", n=len(g),
                                uncertainty=f"{correlation(float(g[column].median()), ioi.runs[name].vocab_size)} "
                                f"of one row's r over {ioi.runs[name].vocab_size:,} IDs; the {len(g)} rows range "
                                f"[{g[column].min():.3f}, {g[column].max():.3f}]"))
            r_rows.append(s.add(f"negative_{column}[{name}]", f"share of rows with {column} < 0, {name}",
                                float((g[column] < 0).mean()), f"fraction of positions whose {column} is negative",
                                n=len(g), uncertainty=binomial_ci(int((g[column] < 0).sum()), len(g))))
    s.row("Logit against token ID within a row", "negative: lower IDs get higher logits, in both models", r_rows)
    cross = ioi.cross
    c5 = [s.add("mean_d_L", "mean d_L", float(cross["d_L"].mean()),
                "mean over paired positions of the RMS distance between the two models' rows of L over the "
                "tokens both vocabularies share (metrics.row_distance)", n=len(cross),
                uncertainty=mean_se(cross["d_L"], "paired positions")),
          s.add("mean_d_L_positions", f"mean d_L_positions, {cross['model'].iloc[0]}",
                float(cross["d_L_positions"].mean()), "mean over paired positions of each row's mean RMS distance "
                "to the model's own rows at the other paired positions (metrics.position_distance)",
                n=len(cross), uncertainty=mean_se(cross["d_L_positions"], "paired positions")),
          s.add("mean_other_d_L_positions", f"mean d_L_positions, {cross['other'].iloc[0]}",
                float(cross["other_d_L_positions"].mean()), "as mean_d_L_positions, for the second model",
                n=len(cross), uncertainty=mean_se(cross["other_d_L_positions"], "paired positions")),
          s.add("share_between_models_smaller", "share of pairs with d_L < both d_L_positions",
                float(((cross["d_L"] < cross["d_L_positions"]) & (cross["d_L"] < cross["other_d_L_positions"])).mean()),
                "fraction of paired positions where the rows differ less between the models than between positions",
                n=len(cross), uncertainty=binomial_ci(int(((cross["d_L"] < cross["d_L_positions"])
                                                           & (cross["d_L"] < cross["other_d_L_positions"])).sum()),
                                                      len(cross)))]
    s.row("Rows of L between the models vs between positions (across models)",
          "rows differ much less between the two models than between positions", c5,
          verdict=_c5_verdict(cross))
    literal = []
    for name, g in frame.groupby("model", sort=False):
        literal.append(s.add(f"mean_L_std[{name}]", f"mean L_std, {name}", float(g["L_std"].mean()),
                             "mean over positions of the standard deviation of L within the row", n=len(g),
                             uncertainty=mean_se(g["L_std"])))
        literal.append(s.add(f"std_L_mean[{name}]", f"spread of L_mean, {name}", float(g["L_mean"].std(ddof=0)),
                             "standard deviation over positions of the row means of L", n=len(g),
                             uncertainty=EXACT + " (a spread over the prompt's positions)"))
    s.row("Read literally: values within a row vs between rows", "(Conclusion 5, as the blocks of Figs. 24–25 show it)",
          literal)
    s.figure("id_logit", thesis_figures.id_logit_correlation(frame),
             "Pearson r between token ID (left) or log(1 + ID) (right) and L within each row.")
    s.figure("distances", thesis_figures.row_distances(cross),
             "Per paired position: distance between the models' rows (d_L) and from each row to the "
             "model's own other rows (d_L_positions).")
    s.frames["rows"] = frame
    s.frames["cross"] = cross
    return s


def _c5_verdict(cross: pd.DataFrame) -> str:
    smaller = (cross["d_L"] < cross["d_L_positions"]) & (cross["d_L"] < cross["other_d_L_positions"])
    return ("holds at every paired position" if smaller.all() else
            "holds at no paired position" if not smaller.any() else "holds at some paired positions only")
