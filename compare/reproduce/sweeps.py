"""Sections 6, 7 and 9: noise in the models (Figs. 22–25, Conclusions 3–4) and the channel ranking (§7.4).

Noise goes where the thesis put it on Mamba, the state h(t) (`plan.component`; the residual stream
on other families, which the thesis did not noise), with the package's sweep (`noise_sweep`, fresh
draws), fits (`phase_transition`) and channel ranking (`channel_sensitivity`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..measures import metrics
from ..figures import noise as noise_figures, thesis as thesis_figures
from ..analyses.channels import channel_sensitivity, feature_shape
from ..handle.model import Model, NonFiniteError
from ..analyses.noise import draw_noise, noise_sweep
from ..measures.phase import phase_transition
from .components import component_table, status_reasons
from .context import Context
from .lens import lens_rows
from .plan import FLATTENED_LAYERS, IOI, MARY, THESIS_CRITICAL, component, scaled_layer, spread
from .report import Section
from .uncertainty import EXACT, binomial_ci, mean_se
from .uncertainty import spread as draw_spread

SWEEPS = (("gaussian", "absolute"), ("uniform", "absolute"), ("gaussian", "relative"))


def noise(ctx: Context) -> Section:
    s = Section(6, "noise", "Noise in the hidden state", "Figs. 22–23, Conclusions 3–4")
    plan, levels = ctx.plan, np.linspace(0.0, ctx.plan.noise_max, ctx.plan.noise_levels)
    frames, fits = [], []
    for h in ctx.handles:
        comp, layers = component(h), spread(h.n_layers, plan.noise_layers)
        for distribution, scale in SWEEPS:
            ctx.check_stop()
            params = dict(component=comp, layers=layers, levels=levels.round(6).tolist(), trials=plan.noise_trials,
                          distribution=distribution, scale=scale, seed=ctx.seed, draws="fresh", target=MARY,
                          positions="all", n_boot=plan.n_boot)
            df = noise_sweep(IOI, model=h, target=MARY, component=comp, layers=layers, levels=levels,
                             trials=plan.noise_trials, distribution=distribution, scale=scale, seed=ctx.seed,
                             draws="fresh", stop=ctx.stop)
            ctx.check_stop()
            fit = phase_transition(df, n_boot=plan.n_boot, seed=ctx.seed)
            frames.append(df.assign(distribution=distribution, scale=scale))
            fits.append(fit.assign(distribution=distribution, scale=scale))
            tag = f"{h.name}|{distribution}|{scale}"
            for column in ("critical_level", "ci_low", "ci_high", "status"):
                s.add(f"{column}[{tag}]", f"{column} per layer, {tag}", fit[column].tolist(),
                      f"{column} of the logistic fit of hit against level, per layer (phase_transition; "
                      "95 % expanded percentile bootstrap over runs)", **params)
    sweeps = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    fitted = pd.concat(fits, ignore_index=True) if fits else pd.DataFrame()
    if len(sweeps) and not sweeps["finite"].all():
        s.notes.append(overflow_note(int((~sweeps["finite"]).sum()), len(sweeps)))
    rows, trend = [], []
    lo, hi = float(levels.min()), float(levels.max())
    for (model, distribution, scale), g in (fitted.groupby(["model", "distribution", "scale"], sort=False)
                                            if len(fitted) else []):
        tag = f"{model}|{distribution}|{scale}"
        ok = g[g["status"] == "fit"]
        covers = ok[(ok["ci_low"] <= THESIS_CRITICAL) & (ok["ci_high"] >= THESIS_CRITICAL)]
        why = status_reasons(g, lo, hi)
        runs = int(g["n"].sum()) if "n" in g else None
        over = int(g["overflowed"].sum())
        rows.append(s.add(f"fitted_layers[{tag}]", f"layers with a fit, {tag}", f"{len(ok)} of {len(g)}",
                          "layers whose hits fall from 1 to 0 inside the swept levels (status 'fit')",
                          n=runs, uncertainty=f"exact count of {len(g)} layers, {runs} runs; {why}"))
        rows.append(s.add(f"overflowed[{tag}]", f"runs that overflowed, {tag}", f"{over} of {runs}",
                          f"runs whose noisy logits were NaN or infinite (the noise overflowed the network): "
                          f"no prediction, counted as misses of {MARY!r} in the fits and hit rates", n=runs,
                          uncertainty=EXACT, overflowed=over, runs=runs))
        rows.append(s.add(f"median_critical[{tag}]", f"median critical level, {tag}",
                          float(ok["critical_level"].median()) if len(ok) else None,
                          "median over fitted layers of the critical level (hit rate 0.5)", n=len(ok),
                          uncertainty=(f"fitted layers' 95 % bootstrap CIs span [{ok['ci_low'].min():.3g}, "
                                       f"{ok['ci_high'].max():.3g}]" if len(ok) else f"not measured: {why}")))
        rows.append(s.add(f"layers_covering[{tag}]", f"layers whose CI holds {THESIS_CRITICAL}, {tag}",
                          covers["layer"].tolist(), f"fitted layers whose 95 % CI contains {THESIS_CRITICAL}",
                          n=len(ok), uncertainty="95 % expanded percentile bootstrap per layer" if len(ok) else
                          f"no layer fitted: {why}"))
    for model, g in (sweeps[(sweeps["distribution"] == "gaussian") & (sweeps["scale"] == "absolute")]
                     .groupby("model", sort=False) if len(sweeps) else []):
        rate = g.groupby("layer")["hit"].mean()  # an overflowed run is a miss (hit False)
        constant = rate.nunique() < 2
        rank_r, p = (None, None) if len(rate) < 2 or constant else spearman_test(rate.index, rate)
        trend.append(s.add(f"spearman_layer_hit[{model}]", f"Spearman r(layer, hit rate), {model}", rank_r,
                           "Spearman r between layer and the mean hit rate over all levels and trials "
                           "(positive: later layers survive more noise); overflowed runs count as misses",
                           n=len(rate),
                           uncertainty=(f"p = {p:.2g} (two-sided test of no rank correlation, n = {len(rate)} layers)"
                                        if p is not None else f"not defined: every layer's hit rate is "
                                        f"{float(rate.iloc[0]) if len(rate) else float('nan'):.3g} (no spread to rank)"),
                           distribution="gaussian", scale="absolute", layers=rate.index.tolist()))
        per_layer = g.groupby("layer")["hit"].agg(["sum", "count"])
        trend.append(s.add(f"hit_rate_per_layer[{model}]", f"mean hit rate per layer, {model}",
                           rate.round(4).tolist(), "mean hit over levels and trials, per swept layer "
                           f"({int((~g['finite']).sum())} of {len(g)} runs overflowed: misses)",
                           n=int(per_layer["count"].iloc[0]) if len(per_layer) else 0,
                           uncertainty="runs per layer; widest 95 % Wilson interval of a layer: "
                           + max((binomial_ci(int(r["sum"]), int(r["count"])) for _, r in per_layer.iterrows()),
                                 key=_width, default="none"),
                           layers=rate.index.tolist()))
    s.row("Phase transition (Fig. 22)", f"the prediction flips at ≈ {THESIS_CRITICAL} (Gaussian noise in h(t), "
          "levels 0…1; layer not stated); also with uniform noise", rows)
    s.row("Early vs late layers (Fig. 23)", "late layers are less sensitive to noise than early ones", trend)
    component_table(ctx, s)
    if len(sweeps):
        main = sweeps[(sweeps["distribution"] == "gaussian") & (sweeps["scale"] == "absolute")]
        main_fits = fitted[(fitted["distribution"] == "gaussian") & (fitted["scale"] == "absolute")]
        first = main[main["model"] == ctx.mamba.name]
        reasons = status_reasons(fitted, lo, hi)
        if len(first):
            panels = spread(ctx.mamba.n_layers, ctx.plan.hit_curve_panels)
            panels = [layer for layer in panels if layer in set(first["layer"])] or None
            fig = noise_figures.hit_curves(first, main_fits, layers=panels, max_panels=ctx.plan.hit_curve_panels)
            s.figure("hit_curves", readable(fig, f"{ctx.mamba.name}: hit rate against the Gaussian noise level "
                                                 f"({len(levels)} levels × {plan.noise_trials} trial(s) per layer)",
                                            status_reasons(main_fits[main_fits["model"] == ctx.mamba.name], lo, hi)),
                     f"{ctx.mamba.name}: hit rate (dots) and P({MARY!r}) (line) against the Gaussian noise level "
                     "(absolute), logistic fit dashed, critical level dotted, CI shaded.")
        s.figure("heatmap", readable(noise_figures.hit_heatmap(main), "Hit rate over layer × noise level "
                                     "(Gaussian, absolute)", reasons),
                 "Hit rate over layer × level (Gaussian, absolute).")
        labelled = fitted.assign(component=fitted["component"] + " " + fitted["distribution"] + " " + fitted["scale"])
        s.figure("critical_levels", readable(noise_figures.critical_levels(labelled), "Critical level per layer "
                                             "with its 95 % CI", "no layer has a fit: " + reasons),
                 "Critical level per layer with its 95 % CI, every sweep (layers without a fit left out).")
    s.frames["sweeps"] = sweeps
    s.frames["critical_levels"] = fitted
    return s


def overflow_note(over: int, runs: int) -> str:
    return (f"{over} of {runs} noisy runs overflowed (their logits were NaN or infinite): they have no prediction "
            f"and are treated as misses of {MARY!r}, in the fits, the hit rates and the figures.")


def readable(fig, title: str, note: str):
    """`fig` with a title where it has none, and `note` written on every axes that holds no data
    (a sweep where no layer was fitted leaves the critical-level axes empty)."""
    if fig._suptitle is None and not any(ax.get_title() for ax in fig.axes):
        fig.suptitle(title)
    for ax in fig.axes:
        if not has_data(ax) and ax.get_label() != "<colorbar>":
            ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center", wrap=True, fontsize=8,
                    bbox={"facecolor": "#fff4d6", "edgecolor": "#e0c060"})
    return fig


def has_data(ax) -> bool:
    """Whether `ax` draws anything from data: a line with points, a non-empty collection, an image, a bar."""
    return (any(len(line.get_xdata()) for line in ax.lines) or bool(ax.images) or bool(ax.patches)
            or any(len(c.get_offsets()) or (hasattr(c, "get_array") and c.get_array() is not None)
                   for c in ax.collections))


def spearman_test(x, y) -> tuple[float, float]:
    from scipy import stats

    result = stats.spearmanr(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return float(result.statistic), float(result.pvalue)


def _width(text: str) -> float:
    low, high = text.split("[", 1)[1].split("]", 1)[0].split(",")
    return float(high) - float(low)


def noisy_rows(handle: Model, ids, comp: str, layer: int, level: float, seed: int, trial: int = 0) -> np.ndarray:
    """L [T, V] with level · ε added to `comp` of `layer` at every position, ε the Gaussian draw of
    `noise.draw_noise` for (seed, layer, trial): the ray `noise_sweep(draws="ray")` adds at that trial."""
    ids = handle.as_input(ids)
    eps = draw_noise((ids.shape[1], *feature_shape(handle, comp)), seed=seed, layer=layer, trial=trial,
                     distribution="gaussian")
    with torch.no_grad(), handle.nn.trace(ids):
        handle.point(comp, layer)[0] += level * eps
        logits = handle.point("logits").save()
    L = logits[0, :, : handle.vocab_size].float()
    if not torch.isfinite(L).all():
        raise NonFiniteError(f"{handle.name}: noise {level} on {comp!r} at layer {layer} overflowed the logits")
    return L.numpy()


def flattened(ctx: Context) -> Section:
    s = Section(7, "flattened", "Flattened L, clean and with noise", "Figs. 24–25")
    ioi, level, draws = ctx.ioi(), ctx.plan.flattened_level, ctx.plan.flattened_draws
    clean, noisy, rows = {}, {}, []
    sep_rows, block_rows = [], []
    for h in ctx.handles:
        run = ioi.runs[h.name]
        clean[h.name] = run.logits
        each = metrics.position_distance(run.logits)
        blocks = float(each.mean())
        block_rows.append(s.add(f"block_distance[{h.name}]", f"mean distance between blocks, {h.name}", blocks,
                                "mean over positions of the RMS distance from the position's clean row of L to the "
                                "other positions' rows (metrics.position_distance)", n=len(run.ids),
                                uncertainty=EXACT + "; " + mean_se(each)))
        comp = component(h)
        for thesis_layer in FLATTENED_LAYERS:
            layer = scaled_layer(thesis_layer, h.n_layers)
            ratios, over = [], 0
            for trial in range(draws):
                ctx.check_stop()
                try:
                    L = noisy_rows(h, run.ids, comp, layer, level, ctx.seed, trial)
                except NonFiniteError as err:
                    s.notes.append(f"{err} (draw {trial}): that draw is left out")
                    over += 1
                    continue
                if trial == 0:
                    noisy[(h.name, layer)] = L
                d = metrics.row_distance(run.logits, L)
                ratios.append(float(d.mean()) / blocks if blocks > 0 else None)
                rows.append(pd.DataFrame({"model": h.name, "layer": layer, "trial": trial,
                                          "position": np.arange(len(d)), "distance_noisy_clean": d}))
            kept = [r for r in ratios if r is not None]
            sep_rows.append(s.add(f"separation[{h.name}|{layer}]", f"clean–noisy distance ÷ block distance, "
                                  f"{h.name} layer {layer}", float(np.mean(kept)) if kept else None,
                                  "mean over draws of: the mean over positions of the RMS distance between the clean "
                                  "and the noisy row of L, divided by the mean distance between the clean blocks",
                                  n=len(kept), uncertainty=draw_spread(kept), component=comp, layer=layer,
                                  thesis_layer=thesis_layer, level=level, scale="absolute", distribution="gaussian",
                                  seed=ctx.seed, trials=list(range(draws))))
            sep_rows.append(s.add(f"overflowed[{h.name}|{layer}]", f"draws that overflowed, {h.name} layer {layer}",
                                  f"{over} of {draws}", "noisy draws whose logits were NaN or infinite: no row of "
                                  "L to measure, left out of the separation's mean", n=draws, uncertainty=EXACT,
                                  overflowed=over, runs=draws, layer=layer, level=level))
    s.row("Noise at an early vs a late layer (Fig. 24)", "noise at layer 2 separates the clean and noisy blocks; "
          "at layer 22 they barely separate", sep_rows)
    s.row("Blocks of the two models (Fig. 25)", "GPT-2's blocks lie closer together than Mamba's", block_rows)
    if noisy:
        s.figure("flattened", thesis_figures.flattened_noisy(clean, noisy),
                 f"Every position's row of L concatenated, clean (blue) and with Gaussian noise of level {level} "
                 "(absolute) at one layer (orange, draw 0), each in its own panel on a shared y axis.")
    s.frames["distances"] = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    lens_rows(ctx, s)
    return s


def channels(ctx: Context) -> Section:
    """§7.4 as the thesis defines it: a channel matters when noise on it alone makes the model miss
    " Mary" (and noise elsewhere does not). Ranked by the fall of P(" Mary") it causes (a continuous
    effect, so ties are rare); the share of trials that miss " Mary" beside it."""
    s = Section(9, "channels", "Which channels carry the prediction", "§7.4 (future work)")
    plan, rows, frames = ctx.plan, [], []
    for h in ctx.handles:
        ctx.check_stop()
        comp, layer = component(h), scaled_layer(plan.channel_layer, h.n_layers)
        mary = h.single_token(MARY)
        with torch.no_grad():
            clean = torch.softmax(h.logits(h.encode(IOI))[0, -1].double(), -1)
        p_clean, clean_hits = float(clean[mary]), int(clean.argmax()) == mary
        df = channel_sensitivity(IOI, model=h, target=MARY, component=comp, layer=layer, level=plan.channel_level,
                                 trials=plan.channel_trials, seed=ctx.seed, scale="relative", stop=ctx.stop)
        ctx.check_stop()
        df = df.assign(effect=p_clean - df["p_target"],
                       miss_rate=df["flip_rate"] if clean_hits else np.nan)  # a flip leaves " Mary" only when it led
        df = df.sort_values(["axis", "effect"], ascending=[True, False], kind="stable")
        df["rank"] = df.groupby("axis").cumcount() + 1
        frames.append(df)
        params = dict(component=comp, layer=layer, level=plan.channel_level, scale="relative",
                      trials=plan.channel_trials, seed=ctx.seed, p_clean=p_clean)
        sure = (f"{plan.channel_trials} trial(s) per channel, each a fresh draw; ranks by the mean fall of "
                f"P({MARY!r}) from its clean {p_clean:.3g}")
        for axis, g in df.groupby("axis", sort=False):
            top = g.head(5)
            ties = tied(g["effect"].to_numpy())
            rows.append(s.add(f"top_channels[{h.name}|{axis}]", f"top 5 along {axis}, {h.name}", top["channel"].tolist(),
                              f"the {axis} indices whose noise alone most lowers P({MARY!r}) (mean over trials)", n=len(g),
                              uncertainty=f"{sure}; {ties} {axis} indices share their effect with another (ties, "
                              "reported as ties)", **params))
            rows.append(s.add(f"top_effects[{h.name}|{axis}]", f"their fall of P({MARY!r}), {h.name}",
                              top["effect"].tolist(), f"P({MARY!r}) clean minus its mean with noise on the {axis}",
                              n=plan.channel_trials, uncertainty=sure + "; next after them: "
                              f"{g['effect'].iloc[5] if len(g) > 5 else float('nan'):.3g}", **params))
            runs = len(g) * plan.channel_trials
            over = int(g["overflowed"].sum())
            rows.append(s.add(f"overflowed[{h.name}|{axis}]", f"runs that overflowed, {h.name} {axis}s",
                              f"{over} of {runs}", "(channel, trial) runs whose noisy logits were NaN or infinite: "
                              f"no prediction, counted as misses of {MARY!r} (a flip) and left out of the mean "
                              f"P({MARY!r})", n=runs, uncertainty=EXACT, overflowed=over, runs=runs, **params))
            misses = int(round(float(g["miss_rate"].mean()) * runs)) if clean_hits else 0
            rows.append(s.add(f"miss_share[{h.name}|{axis}]", f"share of trials missing {MARY!r}, {h.name}",
                              float(g["miss_rate"].mean()) if clean_hits else None,
                              f"fraction of (channel, trial) runs whose last prediction is not {MARY!r} (an overflowed "
                              "run counts as a miss)", n=runs,
                              uncertainty=binomial_ci(misses, runs) if clean_hits else
                              f"not measured: {MARY!r} is not the clean prediction (P = {p_clean:.3g}), so §7.4's "
                              "test (does noise on this channel make the model miss it?) has nothing to lose",
                              **params))
        s.figure(f"bars_{h.name}", thesis_figures.channel_effects(df, top=15, p_clean=p_clean,
                                                                  trials=plan.channel_trials),
                 f"{h.name}: the channels of {comp} at layer {layer} whose noise alone most lowers P({MARY!r}) "
                 f"(relative noise, level {plan.channel_level}, {plan.channel_trials} trial(s) per channel).")
    s.row("Channel ranking (§7.4)", f"proposed as future work: a parameter matters when noise on it makes the model "
          f"miss {MARY!r} while noise on the others does not", rows)
    s.frames["ranking"] = pd.concat(frames, ignore_index=True)
    over = int(s.frames["ranking"]["overflowed"].sum())
    if over:
        s.notes.append(overflow_note(over, len(s.frames["ranking"]) * plan.channel_trials))
    return s


def tied(effect: np.ndarray, rtol: float = 1e-9) -> int:
    """How many entries of `effect` equal another one (within rtol of the largest |effect|)."""
    if len(effect) < 2:
        return 0
    order = np.sort(effect)
    close = np.diff(order) <= rtol * max(np.abs(order).max(), 1e-300)
    marked = np.zeros(len(order), bool)
    marked[1:] |= close
    marked[:-1] |= close
    return int(marked.sum())
