"""`thesis_report`: every experiment of the thesis (Mamba-130m vs GPT-2, 2024) in one call, beside what it claims.

    thesis_report("out/report")                     # the thesis's models (needs the Hub or its cache)
    thesis_report("out/r", models=("./mamba", "./gpt2"), quick=True)
    python -m compare reproduce --out DIR [--mamba SRC] [--gpt2 SRC] [--quick] [--trials N] [--noise-levels N]
                                [--seed N] [--overwrite]

What ran comes first: each checkpoint's source, parameters and weight digest, whether it is the thesis's
and whether it models English (`identity`); a banner opens the page where either fails, and the title
says "reproduced" only when both models are the thesis's checkpoints and model English. Every measured
number carries n and an interval, a test or a spread (`uncertainty`).

Ten sections, in the thesis's order (one module per concept):
    1–2  tokens      token IDs of its inputs; token ID vs length
    3, 4, 8 logits   K distributions; trajectories; the rows of L (Result 2, Conclusion 5)
    5    periodic    periodic ID inputs, three ways
    6, 7, 9 sweeps   noise in h(t) (every component too: `components`); flattened L with noise (and the
                     logit lens beside it: `lens`); §7.4
    10   deviations  errata read from the thesis's text and checked (`errata`), and every choice made
Each section is a `report.Section`: a figure or more, a "thesis says / measured here" table whose
numbers (`report.Number`) carry their definition and parameters, tidy frames. `writing` publishes
the folder atomically; `render` draws the one-file HTML page.
"""
from __future__ import annotations

import os
import platform
import sys
import time
import types
import warnings
from dataclasses import replace
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..base.checks import check_callbacks
from ..analyses.comparison import Stopped
from ..handle.loading import cached_model
from ..handle.model import Model
from . import deviations, errata, identity, logits, periodic, sweeps, tokens, writing
from .context import Context
from .plan import FULL, QUICK, THESIS_LAYERS, scaled_layer
from .report import Report

__all__ = ["thesis_report", "Stopped", "SECTIONS"]

SECTIONS = (tokens.token_ids, tokens.id_vs_length, logits.k_distributions, logits.trajectories,
            periodic.periodic, sweeps.noise, sweeps.flattened, logits.rows_of_l, sweeps.channels)
STATEMENT = ("These numbers describe the weights that were run (named below) and nothing else: a conclusion "
             "holds for other checkpoints, other prompts or other seeds only where they are run too.")
LIBRARIES = ("mamba-gpt2-compare", "torch", "transformers", "nnsight", "numpy", "pandas", "scipy", "matplotlib",
             "seaborn", "pyarrow")


def thesis_report(out: str | os.PathLike, *, models: Sequence[Any] = ("mamba-130m", "gpt2"), quick: bool = False,
                  seed: int = 0, trials: int | None = None, noise_levels: int | None = None, progress=None,
                  overwrite: bool = False, device=None, stop=None, thesis_text=None) -> Path:
    """Run every experiment of the thesis on `models` and write the report folder `out`; returns its path.

    models: two model sources (aliases, Hub ids, local directories) or loaded `Model` handles: the
        Mamba role first (the thesis's subject and the reference of every comparison), then GPT-2's.
    quick: small sweeps (`plan.QUICK`: few layers, levels and trials), for a check that the whole
        report runs; the default runs `plan.FULL`. Both are stated in the report's header.
    trials: noise draws per channel of the channel ranking (§7.4); noise_levels: levels of each noise
        sweep in [0, 1] (§7.1: 100, one draw each). Default: the plan's (`plan.FULL`, `plan.QUICK`).
    seed: every noise draw and bootstrap of the report. progress: called as progress(done, total)
        after each section. stop: anything with ``is_set()`` (a `threading.Event`), checked between
        steps; once set, `Stopped` is raised and nothing is written.
    thesis_text: the thesis's text file, read by the errata checks (default: ../shared/thesis/*.txt beside
        the project, or $COMPARE_THESIS_TEXT; where absent, the errata are "not applicable").
    overwrite: replace `out` when it holds a previous report (never anything else, `compare.base.store`).
    The folder appears complete or not at all: an error or a stop leaves `out` as it was.
    """
    if not isinstance(quick, bool):
        raise TypeError(f"quick: must be True or False, got {quick!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed: must be an integer ≥ 0, got {seed!r}")
    seed = int(seed)
    for name, given, least in (("trials", trials, 1), ("noise_levels", noise_levels, 2)):
        if given is not None and (not isinstance(given, (int, np.integer)) or isinstance(given, bool) or given < least):
            raise ValueError(f"{name}: must be an integer ≥ {least} (or None for the plan's), got {given!r}")
    check_callbacks(progress, stop)
    if isinstance(models, (str, os.PathLike, Model)) or not isinstance(models, Sequence) or len(models) != 2:
        raise ValueError(f"models: must be two model sources or Model handles (the Mamba role, then the GPT-2 "
                         f"role), got {models!r}")
    writing.check(out, overwrite)  # a bad folder is refused before minutes of work
    text = errata.thesis_text(thesis_text)
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    handles = [m if isinstance(m, Model) else cached_model(m, device=device) for m in models]
    if handles[0].name == handles[1].name:
        raise ValueError(f"models: both are named {handles[0].name!r}; the report keys results by model name")
    plan = QUICK if quick else FULL
    plan = replace(plan, channel_trials=int(trials) if trials is not None else plan.channel_trials,
                   noise_levels=int(noise_levels) if noise_levels is not None else plan.noise_levels)
    ctx = Context(handles[0], handles[1], plan, seed, stop, thesis=text)
    total, sections = len(SECTIONS) + 2, []
    for fn in SECTIONS:
        ctx.check_stop()
        sections.append(fn(ctx))
        if progress is not None:
            progress(len(sections), total)
    sections.append(deviations.section(ctx, deviations.bump_positions(sections)))
    ctx.check_stop()
    header = _header(models, handles, plan, seed, started, time.perf_counter() - clock)
    report = Report(header, sections, deviations.choices(ctx))
    path = writing.write(report, out, overwrite=overwrite)
    if progress is not None:
        progress(total, total)
    return path


def _header(sources, handles: list[Model], plan, seed: int, started: datetime, seconds: float) -> dict:
    """What ran, first: each checkpoint (source, parameters, digest, the thesis's or not, English or not),
    a banner where a model is not the thesis's or does not model English, then the run and the plan."""
    roles = ("Mamba role", "GPT-2 role")
    models, faithful = [], True
    for i, (role, src, h) in enumerate(zip(roles, sources, handles)):
        status, why = identity.thesis_checkpoint(src, h, i)
        language = identity.language_check(h)
        faithful &= status == identity.THESIS and language.models_english
        models.append({"role": role, "source": identity.source_text(src), "name": h.name, "family": h.family,
                       "parameters": identity.parameter_count(h), "weights_sha256": identity.weights_digest(h),
                       "thesis_checkpoint": why, "models_english": language.models_english,
                       "language_check": language.verdict(), "loss_nats_per_token": round(language.loss, 4),
                       "unigram_nats_per_token": round(language.unigram, 4), "language_tokens": language.n_tokens,
                       "layers": h.n_layers, "channel_layer": scaled_layer(plan.channel_layer, h.n_layers),
                       "vocabulary": h.vocab_size, "lm_head_rows": h.module.lm_head.out_features,
                       "dtype": str(h.dtype).replace("torch.", ""), "device": str(h.device)})
    banner = []
    for m in models:
        if not m["models_english"]:
            banner.append(f"{m['name']} ({m['role']}) does not model English ({m['language_check']}).")
        if not m["thesis_checkpoint"].startswith(identity.THESIS):
            banner.append(f"{m['name']} ({m['role']}) is not known to be the thesis's checkpoint "
                          f"({m['thesis_checkpoint']}).")
    if banner:
        banner.append("No number below describes the thesis's models: it describes these weights only.")
    names = f"{handles[0].name} vs {handles[1].name}"
    return {
        "title": (f"The thesis, reproduced: {names}" if faithful else
                  f"The thesis's experiments, run on other weights: {names}"),
        "banner": banner,
        "statement": STATEMENT,
        "models": models,
        "run": {"started_utc": started.isoformat(timespec="seconds"), "seconds": round(seconds, 1),
                "python": platform.python_version(), "machine": platform.machine()},
        "seed": seed,
        "plan": plan_header(plan, handles),
        "versions": {lib: _version(lib) for lib in LIBRARIES},
    }


def plan_header(plan, handles: list[Model]) -> dict:
    """The plan's sizes, its channel layer as the layers each model actually ran (the plan's is one of
    Mamba-130m's 24, moved to the same relative depth: `plan.scaled_layer`)."""
    used = ", ".join(f"layer {scaled_layer(plan.channel_layer, h.n_layers)} of {h.name}'s {h.n_layers}"
                     for h in handles)
    return {**vars(plan), "channel_layer": f"{used} (the thesis-scale {plan.channel_layer} of {THESIS_LAYERS}, "
                                           "at the same relative depth)"}


def _version(lib: str) -> str:
    try:
        return version(lib)
    except PackageNotFoundError:
        return "not installed"


class _CallableModule(types.ModuleType):
    """This package, callable as the function of earlier releases: `compare.reproduce(out, ...)` was the
    function and hid the package (`compare.reproduce.plan` raised AttributeError); now it is the package,
    and calling it runs `thesis_report` with a DeprecationWarning, for one release."""

    def __call__(self, *args, **kwargs):
        warnings.warn("compare.reproduce(...) is now compare.thesis_report(...); the old name goes in the next "
                      "release", DeprecationWarning, stacklevel=2)
        return thesis_report(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
