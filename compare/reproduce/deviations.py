"""Section 10: the errata checks (`errata`) as a section, and every choice the report had to make."""
from __future__ import annotations

import json

import pandas as pd

from ..analyses.comparison import OUTLIER_Z
from ..measures.metrics import BUMP_MIN_SIZE
from . import errata
from .context import Context
from .plan import (FLATTENED_LAYERS, LITHUANIAN, REPEATED, REPEATED_COUNT, component, scaled_layer, spread)
from .report import Section
from .uncertainty import EXACT


def section(ctx: Context, bump_positions: dict[str, int] | None) -> Section:
    s = Section(10, "errata", "Deviations and errata", "Figs. 10, 12, 19, 21; §6.2, §6.3, §6.4.2; eq. 6, eq. 9")
    checks = errata.checks(ctx.mamba, ctx.gpt2, text=ctx.thesis, bump_positions=bump_positions)
    for check in checks:
        e = check.erratum
        status = s.add(f"status[{e.key}]", f"{e.where}: verdict", check.status,
                       "the check's outcome: " + ", ".join(errata.STATUSES), n=1,
                       uncertainty=EXACT + " (a reading of the thesis's text and the tokenizers)", compares=e.compares)
        found = s.add(f"found[{e.key}]", f"{e.where}: found", json.dumps(check.found, ensure_ascii=False, default=str),
                      "what the check read from the thesis's text and the tokenizers", n=1, uncertainty=EXACT,
                      compares=e.compares)
        magnitude = s.add(f"magnitude[{e.key}]", f"{e.where}: what it changes", check.magnitude or "—",
                          "what the erratum changes, where it changes a number", n=1, uncertainty=EXACT)
        s.row(f"{e.where} (the check compares {e.compares})", e.thesis, [status, found, magnitude],
              verdict=check.status)
    s.table("choices", pd.DataFrame(choices(ctx)), "every choice this report made, with why")
    s.notes.append("The thesis writes every token without its leading space (<Mary>, <sales>): a caption's 'Mon' "
                   "for GPT-NeoX's ' Mon' is its convention, not an erratum.")
    s.notes.append("Every place where this package had to choose is listed below, with why.")
    return s


def bump_positions(sections: list[Section]) -> dict[str, int] | None:
    """Model → positions with a tail bump, as section 3 measured them (None without section 3)."""
    found = {n.key.split("[", 1)[1].rstrip("]"): n.value for s in sections if s.key == "k_distributions"
             for n in s.numbers if n.key.startswith("bump_positions[")}
    return found or None


def choices(ctx: Context) -> list[dict[str, str]]:
    """Every choice the report made where the thesis is silent or where this package differs."""
    p, first, second = ctx.plan, ctx.mamba, ctx.gpt2
    comps = {h.name: component(h) for h in ctx.handles}
    return [
        {"topic": "models", "choice": f"{first.name} in the Mamba role (the reference of every comparison), "
         f"{second.name} in the GPT-2 role", "why": "the thesis compares Mamba against GPT-2"},
        {"topic": "positions", "choice": "T is the 0-based position of the input token after which a prediction is "
         "read; for the second model, the position paired with the first model's T", "why": "the thesis's T runs "
         "0 … 13 over a 14-token prompt"},
        {"topic": "the same prompt", "choice": "the IOI sentence runs in the aligned variant (each first-model token "
         "re-encoded by the second tokenizer); periodic inputs in both same_ids and aligned",
         "why": "on the thesis's tokenizers the IOI sentence aligns one to one; Figs. 20–21 show both variants"},
        {"topic": "K's columns", "choice": "K divides by |mean L| over the real vocabulary; the thesis's mean over "
         "every LM-head row (padding included) is shown beside it in section 3", "why": "padding rows are logits no "
         "token has; the thesis's divisor is also off by one (section 10)"},
        {"topic": f"{REPEATED!r} input", "choice": f"{REPEATED_COUNT} × the ID of {REPEATED!r}, fed as IDs",
         "why": "eq. 9's IDs and Table 1's T = 0 … 13; the string eq. 9 prints is 16 tokens (section 10)"},
        {"topic": "Lithuanian sentence", "choice": f"{LITHUANIAN!r}", "why": "Fig. 9's translation; its text "
         "extraction writes 'éjo', a slip for 'ėjo'"},
        {"topic": "periodic length", "choice": f"{p.periodic_length} tokens", "why": "unstated (T = 50 is mentioned)"},
        {"topic": "periodic IDs", "choice": "IDs outside the first model's vocabulary are reduced modulo its size "
         "(and noted)", "why": "only on vocabularies smaller than the thesis's, e.g. the tests' tiny models"},
        {"topic": "tail bump", "choice": f"a position has a bump when at least {BUMP_MIN_SIZE} tokens lie beyond "
         f"{OUTLIER_Z} robust σ of its K row", "why": "the thesis shows the bump by eye; a Gaussian bulk of 50k tokens "
         "leaves about 2 beyond 4σ"},
        {"topic": "noise component", "choice": ", ".join(f"{n}: {c}" for n, c in comps.items()),
         "why": "the thesis noises Mamba's h(t); it noises nothing in GPT-2, whose residual stream is used here"},
        {"topic": "noise sweep", "choice": f"{p.noise_levels} levels evenly in [0, {p.noise_max:g}], {p.noise_trials} fresh draw(s) "
         f"each ({p.noise_levels * p.noise_trials} runs per layer), every position noised, layers "
         f"{spread(first.n_layers, p.noise_layers)} of {first.name}, seed {ctx.seed}; hit = the last position's "
         "argmax is ' Mary'", "why": "§7.1: noise a layer, record the hit, change the level, a hundred times per "
         "layer (100 runs per layer); " + ("these are the thesis's sizes" if p.noise_levels * p.noise_trials >= 100
                                          else f"DEVIATION: {p.noise_levels * p.noise_trials} runs per layer instead "
                                          f"of 100 ({p.name} plan or --noise-levels), for time")},
        {"topic": "§7.2, every component", "choice": f"every noisable component of {first.name}, "
         f"{p.component_levels} levels × {p.noise_trials} draw(s) at layers {spread(first.n_layers, p.component_layers)}",
         "why": "DEVIATION: the thesis names no layers or sizes for its other components; the main sweep's 100 levels "
         "at every layer for each of them would multiply the report's time by the number of components"},
        {"topic": "flattened draws", "choice": f"{p.flattened_draws} noise draws per noised run; the figure shows "
         "draw 0, the table the mean and spread over draws", "why": "the thesis shows one draw; one draw has no spread"},
        {"topic": "noise scale", "choice": "absolute (as the thesis) and relative (× the component's RMS) beside it",
         "why": "absolute levels mean different things in different components and models"},
        {"topic": "critical level", "choice": f"logistic fit, 95 % expanded percentile bootstrap, {p.n_boot} resamples "
         "over runs; statuses instead of numbers where no fit is supported", "why": "compare.measures.phase"},
        {"topic": "flattened L", "choice": f"Gaussian noise of level {p.flattened_level} (absolute) at layers "
         f"{[scaled_layer(t, first.n_layers) for t in FLATTENED_LAYERS]} of {first.name} and "
         f"{[scaled_layer(t, second.n_layers) for t in FLATTENED_LAYERS]} of {second.name} (same relative depth as "
         "2 and 22 of 24)", "why": "the thesis's level is unstated ('the same level')"},
        {"topic": "channel ranking (§7.4)", "choice": f"every channel of layer "
         f"{scaled_layer(p.channel_layer, first.n_layers)} ({first.name}) and "
         f"{scaled_layer(p.channel_layer, second.n_layers)} ({second.name}), level {p.channel_level} relative, "
         f"{p.channel_trials} trial(s) per channel (--trials); ranked by the fall of P(' Mary'), ties counted",
         "why": "§7.4 defines a channel's importance by whether noise on it alone makes the model miss ' Mary'; it "
         "gives no sizes. The fall of P(' Mary') is continuous, so ties are rare; a flip of the clean argmax would "
         "differ from a miss of ' Mary' wherever ' Mary' is not the clean prediction. Each channel's run restarts "
         "at its layer, so a late layer (from layer 2, Mamba-130m's 1,552 channels alone outlasted the rest)"},
        {"topic": "Conclusion 5", "choice": "read across models (d_L against d_L_positions) and literally (L_std "
         "against the spread of L_mean)", "why": "its sentence admits both readings"},
        {"topic": "Result 1", "choice": "r over the IOI sentence's tokens and over the vocabulary, linear and "
         "log(1 + ID)", "why": "which tokens and which r give 0.77 is unstated"},
    ]
