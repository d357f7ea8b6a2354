"""Sections 6, 7 and 9: noise in the models (Figs. 22–25, Conclusions 3–4) and the channel ranking (§7.4).

Noise goes where the thesis put it on Mamba, the state h(t) (`plan.component`; the residual stream
on other families, which the thesis did not noise), with the package's sweep (`noise_sweep`, fresh
draws), fits (`phase_transition`) and channel ranking (`channel_sensitivity`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .. import metrics, noise_figures, thesis_figures
from ..channels import channel_sensitivity, feature_shape
from ..model import Model, NonFiniteError
from ..noise import draw_noise, noise_sweep
from ..phase import phase_transition
from .context import Context
from .plan import FLATTENED_LAYERS, IOI, MARY, THESIS_CRITICAL, component, scaled_layer, spread
from .report import Section

SWEEPS = (("gaussian", "absolute"), ("uniform", "absolute"), ("gaussian", "relative"))


def noise(ctx: Context) -> Section:
    s = Section(6, "noise", "Noise in the hidden state", "Figs. 22–23, Conclusions 3–4")
    plan, levels = ctx.plan, np.linspace(0.0, 1.0, ctx.plan.noise_levels)
    frames, fits = [], []
    for h in ctx.handles:
        comp, layers = component(h.family), spread(h.n_layers, plan.noise_layers)
        for distribution, scale in SWEEPS:
            ctx.check_stop()
            params = dict(component=comp, layers=layers, levels=levels.round(6).tolist(), trials=plan.noise_trials,
                          distribution=distribution, scale=scale, seed=ctx.seed, draws="fresh", target=MARY,
                          positions="all", n_boot=plan.n_boot)
            try:
                df = noise_sweep(IOI, model=h, target=MARY, component=comp, layers=layers, levels=levels,
                                 trials=plan.noise_trials, distribution=distribution, scale=scale, seed=ctx.seed,
                                 draws="fresh", stop=ctx.stop)
            except NonFiniteError as err:
                s.notes.append(f"{h.name}, {distribution} {scale}: not measured, the logits overflowed ({err})")
                continue
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
    rows, trend = [], []
    for (model, distribution, scale), g in (fitted.groupby(["model", "distribution", "scale"], sort=False)
                                            if len(fitted) else []):
        tag = f"{model}|{distribution}|{scale}"
        ok = g[g["status"] == "fit"]
        covers = ok[(ok["ci_low"] <= THESIS_CRITICAL) & (ok["ci_high"] >= THESIS_CRITICAL)]
        rows.append(s.add(f"fitted_layers[{tag}]", f"layers with a fit, {tag}", f"{len(ok)} of {len(g)}",
                          "layers whose hits fall from 1 to 0 inside the swept levels (status 'fit')"))
        rows.append(s.add(f"median_critical[{tag}]", f"median critical level, {tag}",
                          float(ok["critical_level"].median()) if len(ok) else None,
                          "median over fitted layers of the critical level (hit rate 0.5)"))
        rows.append(s.add(f"layers_covering[{tag}]", f"layers whose CI holds {THESIS_CRITICAL}, {tag}",
                          covers["layer"].tolist(), f"fitted layers whose 95 % CI contains {THESIS_CRITICAL}"))
    for model, g in (sweeps[(sweeps["distribution"] == "gaussian") & (sweeps["scale"] == "absolute")]
                     .groupby("model", sort=False) if len(sweeps) else []):
        rate = g.groupby("layer")["hit"].mean()
        rank_r = metrics.spearman(rate.index, rate) if len(rate) > 1 else None
        trend.append(s.add(f"spearman_layer_hit[{model}]", f"Spearman r(layer, hit rate), {model}", rank_r,
                           "Spearman r between layer and the mean hit rate over all levels and trials "
                           "(positive: later layers survive more noise)", distribution="gaussian", scale="absolute",
                           layers=rate.index.tolist()))
        trend.append(s.add(f"hit_rate_per_layer[{model}]", f"mean hit rate per layer, {model}",
                           rate.round(4).tolist(), "mean hit over levels and trials, per swept layer",
                           layers=rate.index.tolist()))
    s.row("Phase transition (Fig. 22)", f"the prediction flips at ≈ {THESIS_CRITICAL} (Gaussian noise in h(t), "
          "levels 0…1; layer not stated); also with uniform noise", rows)
    s.row("Early vs late layers (Fig. 23)", "late layers are less sensitive to noise than early ones", trend)
    if len(sweeps):
        main = sweeps[(sweeps["distribution"] == "gaussian") & (sweeps["scale"] == "absolute")]
        main_fits = fitted[(fitted["distribution"] == "gaussian") & (fitted["scale"] == "absolute")]
        first = main[main["model"] == ctx.mamba.name]
        if len(first):
            panels = spread(ctx.mamba.n_layers, ctx.plan.hit_curve_panels)
            panels = [layer for layer in panels if layer in set(first["layer"])] or None
            s.figure("hit_curves", noise_figures.hit_curves(first, main_fits, layers=panels,
                                                            max_panels=ctx.plan.hit_curve_panels),
                     f"{ctx.mamba.name}: hit rate (dots) and P({MARY!r}) (line) against the Gaussian noise level "
                     "(absolute), logistic fit dashed, critical level dotted, CI shaded.")
        s.figure("heatmap", noise_figures.hit_heatmap(main), "Hit rate over layer × level (Gaussian, absolute).")
        labelled = fitted.assign(component=fitted["component"] + " " + fitted["distribution"] + " " + fitted["scale"])
        s.figure("critical_levels", noise_figures.critical_levels(labelled),
                 "Critical level per layer with its 95 % CI, every sweep (layers without a fit left out).")
    s.frames["sweeps"] = sweeps
    s.frames["critical_levels"] = fitted
    return s


def noisy_rows(handle: Model, ids, comp: str, layer: int, level: float, seed: int) -> np.ndarray:
    """L [T, V] with level · ε added to `comp` of `layer` at every position, ε the Gaussian draw of
    `noise.draw_noise` for (seed, layer, trial 0): the ray `noise_sweep(draws="ray")` adds at trial 0."""
    ids = handle.as_input(ids)
    eps = draw_noise((ids.shape[1], *feature_shape(handle, comp)), seed=seed, layer=layer, trial=0,
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
    ioi, level = ctx.ioi(), ctx.plan.flattened_level
    clean, noisy, rows = {}, {}, []
    sep_rows, block_rows = [], []
    for h in ctx.handles:
        run = ioi.runs[h.name]
        clean[h.name] = run.logits
        blocks = float(metrics.position_distance(run.logits).mean())
        block_rows.append(s.add(f"block_distance[{h.name}]", f"mean distance between blocks, {h.name}", blocks,
                                "mean over positions of the RMS distance from the position's clean row of L to the "
                                "other positions' rows (metrics.position_distance)", positions=len(run.ids)))
        comp = component(h.family)
        for thesis_layer in FLATTENED_LAYERS:
            layer = scaled_layer(thesis_layer, h.n_layers)
            ctx.check_stop()
            try:
                L = noisy_rows(h, run.ids, comp, layer, level, ctx.seed)
            except NonFiniteError as err:
                s.notes.append(str(err))
                continue
            noisy[(h.name, layer)] = L
            d = metrics.row_distance(run.logits, L)
            rows.append(pd.DataFrame({"model": h.name, "layer": layer, "position": np.arange(len(d)),
                                      "distance_noisy_clean": d}))
            sep_rows.append(s.add(f"separation[{h.name}|{layer}]", f"clean–noisy distance ÷ block distance, "
                                  f"{h.name} layer {layer}", float(d.mean()) / blocks if blocks > 0 else None,
                                  "mean over positions of the RMS distance between the clean and the noisy row of L, "
                                  "divided by the mean distance between the clean blocks", component=comp,
                                  layer=layer, thesis_layer=thesis_layer, level=level, scale="absolute",
                                  distribution="gaussian", seed=ctx.seed, trial=0))
    s.row("Noise at an early vs a late layer (Fig. 24)", "noise at layer 2 separates the clean and noisy blocks; "
          "at layer 22 they barely separate", sep_rows)
    s.row("Blocks of the two models (Fig. 25)", "GPT-2's blocks lie closer together than Mamba's", block_rows)
    if noisy:
        s.figure("flattened", thesis_figures.flattened_noisy(clean, noisy),
                 f"Every position's row of L concatenated, clean (blue) and with Gaussian noise of level {level} "
                 "(absolute) at one layer (orange).")
    s.frames["distances"] = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    return s


def channels(ctx: Context) -> Section:
    s = Section(9, "channels", "Which channels carry the prediction", "§7.4 (future work)")
    plan, rows, frames = ctx.plan, [], []
    for h in ctx.handles:
        ctx.check_stop()
        comp, layer = component(h.family), scaled_layer(plan.channel_layer, h.n_layers)
        df = channel_sensitivity(IOI, model=h, target=MARY, component=comp, layer=layer, level=plan.channel_level,
                                 trials=plan.channel_trials, seed=ctx.seed, scale="relative", stop=ctx.stop)
        ctx.check_stop()
        frames.append(df)
        params = dict(component=comp, layer=layer, level=plan.channel_level, scale="relative",
                      trials=plan.channel_trials, seed=ctx.seed)
        for axis, g in df.groupby("axis", sort=False):
            top = g.nsmallest(5, "rank")
            rows.append(s.add(f"top_channels[{h.name}|{axis}]", f"top 5 {axis}s, {h.name}", top["channel"].tolist(),
                              f"the {axis}s whose noise alone most often flips the last prediction", **params))
            rows.append(s.add(f"top_flip_rates[{h.name}|{axis}]", f"their flip rates, {h.name}",
                              top["flip_rate"].round(4).tolist(), "fraction of trials whose prediction flipped",
                              **params))
            rows.append(s.add(f"share_flipping[{h.name}|{axis}]", f"share of {axis}s that flip at all, {h.name}",
                              float((g["flip_rate"] > 0).mean()), f"fraction of {axis}s with a flip rate above 0",
                              **params))
        s.figure(f"bars_{h.name}", noise_figures.channel_bars(df, top=15),
                 f"{h.name}: the most sensitive channels of {comp} at layer {layer} (relative noise, level "
                 f"{plan.channel_level}).")
    s.row("Channel ranking", "proposed as future work: find the parameters the prediction needs by recording the "
          "noise per channel", rows)
    s.frames["ranking"] = pd.concat(frames, ignore_index=True)
    return s
