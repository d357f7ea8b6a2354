"""Each analysis' parameters, declared once (`base.signature`): names, defaults, allowed values and
model-free checks of a value given (a default of None means the analysis decides: the family's
component, every layer, ...). The analysis checks its arguments with its signature, a study's spec
(`compare.study.spec`) checks its entries with it, and the app's tabs take their choices and
defaults from it. The allowed values live here, and the analyses export them under their old
names (`noise.DISTRIBUTIONS`, `pairing.VARIANTS`, `patching.METRICS`, ...).

Only compare, noise_sweep, channel_sensitivity, logit_lens and attribution_patch run in studies;
the others' signatures serve the API (and the app's tabs where they have one). What the app caps
(sizes of a sweep on a shared Space) is the app's own (`ui/limits`).
"""
from __future__ import annotations

from dataclasses import replace

from ..base.signature import Param, Signature, component, components, flag, integer, ints, level, levels, token, tokens

VARIANTS = ("native", "same_ids", "aligned")  # `pairing`: how the models' inputs are paired
K_COLUMNS = ("vocab", "all")  # `comparison`: the columns K's row mean runs over
DISTRIBUTIONS = ("gaussian", "uniform")  # `noise`: what ε is drawn from
SCALES = ("absolute", "relative")  # `noise`: ε's scale, absolute or relative to the clean value
DRAWS = ("fresh", "ray")  # `noise`: a fresh ε per run, or one per trial shared by its levels
METRICS = ("logit_diff", "logit", "prob", "logprob")  # `patching`, `attribution`
CORRUPTIONS = ("abc", "name_swap")  # datasets_gen.counterfactuals.KINDS: a suite row's corrupt_<kind> columns
REDUCES = ("mean", "abs_mean", "none")  # `hidden_attention`: over channels (heads), or none

# a suite row carries each model's IDs of its variants: a study picks one (not an analysis argument)
VARIANT = Param("variant", "aligned", choices=VARIANTS, api=False)
# the noise parameters noise_sweep and channel_sensitivity share
TARGET = Param("target", check=token)
COMPONENT = Param("component", None, check=component)  # None: the family's default
TRIALS = Param("trials", 1, check=integer(1))
DISTRIBUTION = Param("distribution", "gaussian", choices=DISTRIBUTIONS)
SCALE = Param("scale", "absolute", choices=SCALES)
POSITIONS = Param("positions", None, check=ints)
SEED = Param("seed", 0, check=integer(0), study=False)  # a study derives each task's seed

COMPARE = Signature("compare", (
    Param("variant", "aligned", choices=VARIANTS),
    Param("track", None, check=tokens),
    Param("batch_size", 8, check=integer(1), study=False),
    Param("tokenizer_stats", False, check=flag, study=False),
    Param("keep_arrays", True, check=flag, study=False),
    Param("k_columns", "vocab", choices=K_COLUMNS, study=False),
))

NOISE_SWEEP = Signature("noise_sweep", (
    TARGET, COMPONENT,
    Param("layers", None, check=ints),
    Param("levels", None, check=levels),  # None: 100 levels in [0, 1]
    TRIALS, DISTRIBUTION, SCALE, POSITIONS, SEED,
    Param("draws", "fresh", choices=DRAWS, study=False),
    VARIANT,
))

NOISY_LOGITS = Signature("noisy_logits", (
    TARGET, COMPONENT,
    Param("layers", check=ints),
    Param("level", check=level),
    Param("trial", 0, check=integer(0)),
    DISTRIBUTION, SCALE, POSITIONS, SEED,
    Param("draws", "fresh", choices=DRAWS),
))

CHANNEL_SENSITIVITY = Signature("channel_sensitivity", (
    TARGET, COMPONENT,
    Param("layer", check=integer(0)),  # negative counts from the end in the API, which checks the range
    Param("level", check=level),
    replace(TRIALS, default=8), SEED, DISTRIBUTION, replace(SCALE, default="relative"), POSITIONS,
    VARIANT,
))

LOGIT_LENS = Signature("logit_lens", (
    Param("layers", None, check=ints),
    Param("positions", None, check=ints),
    Param("target", None, check=token),
    Param("k", 5, check=integer(1)),
    Param("lens", None, study=False),
    VARIANT,
))

ATTRIBUTION_PATCH = Signature("attribution_patch", (
    Param("corruption", choices=CORRUPTIONS, api=False),  # a study's clean/corrupt pair: a suite row's columns
    Param("components", None, check=components),
    Param("layers", None, check=ints),
    Param("metric", "logit_diff", choices=METRICS),
    Param("steps", 1, check=integer(1)),  # 1: the gradient at the corrupt run; k ≥ 2: k segments of the path
))

PATCH_SWEEP = Signature("patch_sweep", (
    Param("answer", check=token),
    Param("wrong", None, check=token),
    Param("component", None, check=component),
    Param("layers", None, check=ints),
    Param("positions", None),  # positions, tuples of them, or "all": `patching` checks them against T
    Param("metric", "logit_diff", choices=METRICS),
))

CAUSAL_TRACE = Signature("causal_trace", (
    Param("samples", 10, check=integer(1)),
    Param("noise", 3.0, check=level),  # multiples of the embeddings' std over the subject
    Param("window", 1, check=integer(1)),
    SEED,
    Param("component", "resid_post", check=component),
    Param("answer", None, check=token),
))

KNOCKOUT = Signature("knockout", (  # positions and layers: `knockout` checks them against T and the model
    Param("sources"), Param("target"), Param("layers"), Param("answer", None, check=token),
))

REDUCE = Param("reduce", "mean", choices=REDUCES)  # None means "none"
HIDDEN_ATTENTION = Signature("hidden_attention", (Param("layer"), Param("channels", None), REDUCE,
                                                  Param("max_bytes", 2**30)))
HEAD_PATTERN = Signature("head_pattern", (Param("layer"), Param("heads", None), REDUCE))
ATTENTION_MAP = Signature("attention_map", (Param("layer"), Param("units", None), REDUCE, Param("max_bytes", 2**30)))

STUDIED = (COMPARE, NOISE_SWEEP, CHANNEL_SENSITIVITY, LOGIT_LENS, ATTRIBUTION_PATCH)
SIGNATURES = {s.analysis: s for s in STUDIED + (NOISY_LOGITS, PATCH_SWEEP, CAUSAL_TRACE, KNOCKOUT, HIDDEN_ATTENTION,
                                                HEAD_PATTERN, ATTENTION_MAP)}
