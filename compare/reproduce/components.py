"""§7.2's claim that the phase transition appears in "almost all Mamba components": the Mamba role's
every noisable component swept (Gaussian, absolute, fresh draws) at a few layers, one critical
level per (component, layer) with its status and reason (part of section 6)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..analyses.noise import noise_sweep
from ..measures.phase import BEYOND_RANGE, phase_transition
from .context import Context
from .plan import IOI, MARY, spread
from .report import Row, Section


def component_table(ctx: Context, s: Section) -> Row:
    """Sweeps every noisable component of the first model; adds the table, the frame and one row to `s`."""
    h, plan = ctx.mamba, ctx.plan
    levels = np.linspace(0.0, plan.noise_max, plan.component_levels)
    layers = spread(h.n_layers, plan.component_layers)
    fits = []
    for comp in h.arch.noisable:
        ctx.check_stop()
        df = noise_sweep(IOI, model=h, target=MARY, component=comp, layers=layers, levels=levels,
                         trials=plan.noise_trials, distribution="gaussian", scale="absolute", seed=ctx.seed,
                         draws="fresh", stop=ctx.stop)
        fits.append(phase_transition(df, n_boot=plan.n_boot, seed=ctx.seed))
    fitted = pd.concat(fits, ignore_index=True) if fits else pd.DataFrame(columns=["component", "status"])
    lo, hi = float(levels.min()), float(levels.max())
    table = []
    for comp, g in fitted.groupby("component", sort=False):
        ok = g[g["status"] == "fit"]
        table.append({"component": comp, "layers": ", ".join(map(str, g["layer"])),
                      "fitted": f"{len(ok)} of {len(g)}",
                      "overflowed runs (misses)": f"{int(g['overflowed'].sum())} of {int(g['n'].sum())}",
                      "critical levels (95 % CI)": "; ".join(f"layer {r.layer}: {r.critical_level:.3g} "
                                                             f"[{r.ci_low:.3g}, {r.ci_high:.3g}]"
                                                             for r in ok.itertuples()) or "—",
                      "why not fitted": status_reasons(g[g["status"] != "fit"], lo, hi) or "—"})
    s.table("components", pd.DataFrame(table), f"§7.2: critical level of every noisable component of {h.name} "
            f"(Gaussian, absolute, {len(levels)} levels × {plan.noise_trials} trial(s), layers {layers}); a run whose "
            "logits overflowed (NaN or infinite) has no prediction and counts as a miss")
    s.frames["components"] = fitted
    over, runs = (int(fitted["overflowed"].sum()), int(fitted["n"].sum())) if len(fitted) else (0, 0)
    with_fit = sum(1 for _, g in fitted.groupby("component") if (g["status"] == "fit").any())
    n = fitted["component"].nunique() if len(fitted) else 0
    number = s.add("components_with_transition", "components with a transition at some swept layer",
                   f"{with_fit} of {n}", "noisable components of the first model with at least one fitted "
                   "(component, layer): the hit rate falls through 0.5 inside the levels", n=n,
                   uncertainty=f"exact count over {n} components × {len(layers)} layers; "
                   + (status_reasons(fitted, lo, hi) if len(fitted) else "no component swept")
                   + f"; {over} of {runs} runs overflowed (NaN or infinite logits), counted as misses",
                   layers=layers, levels=len(levels), overflowed=over, runs=runs)
    return s.row("Every Mamba component (§7.2)", "the transition appears in almost all Mamba components, also with "
                 "uniform noise", [number])


def status_reasons(fits: pd.DataFrame, lo: float, hi: float) -> str:
    """Each fit status of `fits` with its count and its reason in words."""
    reasons = {
        "fit": "the hit rate falls through 0.5 inside the levels",
        "always_hit": f"{MARY!r} stayed the prediction at every level {lo:g} … {hi:g}: no transition in range",
        "never_hit": f"{MARY!r} is not the prediction even without noise (level {lo:g}): nothing to lose",
        BEYOND_RANGE: f"the fitted 0.5 point lies outside {lo:g} … {hi:g}",
    }
    counts = fits["status"].value_counts()
    return "; ".join(f"{count} layer{'s' if count != 1 else ''} {status}: {reasons.get(status, status)}"
                     for status, count in counts.items())
