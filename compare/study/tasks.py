"""A study split into independent tasks, and the one function that runs a task: `execute`.

A task is one prompt × one model × one analysis, except `compare`: it is cross-model (its
metrics pair every model with the first, the reference), so its task is one prompt × all the
study's models, filed under the models' names joined by '+'.

Task key: ``{label}/{model folder}/p{prompt index:06d}``, the path of its result file under the
study folder without the '.parquet'. Seeds: each task's seed is drawn from
``numpy.random.SeedSequence([study seed, *sha256(key)])``, so it depends on what the task is and
never on when or where it runs; both executors give the same rows. noise_sweep and
channel_sensitivity get it as their `seed` (their noise ε is then a function of (task seed,
layer, trial)); it is stored in the rows' `seed` column, so any row can be recomputed with a
direct call.

Suite rows: each model reads its own columns of the row (`analyses.rows`); a model the suite has
none for (a hybrid's own tokenizer) reads the row's text, target and counterfactual tokenised at
run time under datasets_gen's checks, and every row of a suite task carries `run_time_ids` (True
for those), so a reader can tell the suite's stored IDs from IDs made during the study. A row
that fails those checks (a target of two tokens, a pair of unequal lengths) fails its task with
the reason, filed under `_failed/`; the other tasks go on.

Both executors call `execute` and nothing else, in the driver's process (embedded) or in a
worker (Ray); models are loaded once per process (`loading.cached_model`).
"""
from __future__ import annotations

import hashlib
import time
import traceback
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from ..analyses.attribution import attribution_patch
from ..analyses.channels import channel_sensitivity
from ..analyses.lens import logit_lens
from ..analyses.comparison import compare
from ..handle.loading import cached_model
from ..analyses.noise import noise_sweep
from ..analyses import rows
from .spec import Spec, model_key

# compare's cross metrics of a non-reference model's row, vs the reference (first) model
CROSS = {"position": "ref_position", "split": "split", "agree": "agree", "js": "js",
         "shared_mass": "ref_shared_mass", "other_shared_mass": "shared_mass"}


@dataclass(frozen=True)
class Task:
    """One unit of work: everything a worker needs, nothing that depends on the executor."""

    key: str
    analysis: str
    params: Mapping[str, Any]
    models: tuple[str, ...]  # sources: one, or all of the study's for compare
    prompt_index: int
    prompt: Any  # a string or a suite row
    seed: int
    device: str | None


@dataclass(frozen=True)
class Outcome:
    """What `execute` returns: the task's rows, or the error that stopped it."""

    key: str
    frame: pd.DataFrame | None
    error: str | None  # "TypeName: message" when the task failed
    traceback: str | None
    seconds: float


def split(spec: Spec) -> list[Task]:
    """Every task of the study, in a fixed order: analysis, then model, then prompt."""
    tasks = []
    for analysis in spec.analyses:
        groups = ([spec.models] if analysis.name == "compare" else [(m,) for m in spec.models])
        for models in groups:
            folder = "+".join(model_key(m) for m in models)
            for i, prompt in enumerate(spec.prompts):
                key = f"{analysis.label}/{folder}/p{i:06d}"
                tasks.append(Task(key=key, analysis=analysis.name, params=dict(analysis.params), models=models,
                                  prompt_index=i, prompt=prompt, seed=task_seed(spec.seed, key), device=spec.device))
    return tasks


def task_seed(study_seed: int, key: str) -> int:
    """A 32-bit seed from the study seed and the task key (see the module docstring)."""
    words = np.frombuffer(hashlib.sha256(key.encode()).digest(), dtype=np.uint32)
    return int(np.random.SeedSequence([study_seed, *words.tolist()]).generate_state(1, dtype=np.uint32)[0])


def execute(task: Task, threads: int | None) -> Outcome:
    """Run one task on `threads` torch threads (None: as set); an exception inside the analysis
    becomes a failed Outcome, not a raise.

    The thread count is fixed per task because it changes the results: a reduction split over
    another number of threads rounds differently (at 2 threads instead of 1, about 1 in 8 of a
    tiny sweep's p_target differ in the last bits). Failures are deterministic here (same
    inputs, same seed), so they are reported, not retried; only a lost worker is retried (Ray).
    """
    start, previous = time.perf_counter(), torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        frame = run(task)
    except Exception as err:
        return Outcome(task.key, None, f"{type(err).__name__}: {err}", traceback.format_exc(),
                       time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return Outcome(task.key, frame, None, None, time.perf_counter() - start)


def run(task: Task) -> pd.DataFrame:
    """The task's rows: the analysis' own frame, led by `task` and `prompt_index` columns."""
    if task.analysis == "compare":
        frame = _compare(task)
    elif task.analysis in ("logit_lens", "attribution_patch"):
        frame = (_lens if task.analysis == "logit_lens" else _attribution)(task, cached_model(task.models[0],
                                                                                              device=task.device))
    else:
        handle = cached_model(task.models[0], device=task.device)
        params = dict(task.params)
        variant = params.pop("variant", "native")
        prompt, target = task.prompt, params.pop("target", None)
        row = rows.read(prompt, handle, variant) if isinstance(prompt, Mapping) else None
        if row is not None:  # a suite row: the model's own IDs and target
            prompt = row.ids
            if target is None:
                if row.target is None:
                    raise ValueError(f"target: the suite row {task.prompt.get('id')!r} has no one-token target "
                                     f"for {handle.name} ({row.reason}); give 'target' in the analysis")
                target = row.target
        analysis = noise_sweep if task.analysis == "noise_sweep" else channel_sensitivity
        frame = analysis(prompt, model=handle, target=target, seed=task.seed, **params)
        frame["seed"] = np.int64(task.seed)
        if task.analysis == "noise_sweep":  # what `phase_transition` resamples by; attrs do not survive the files
            frame["draws"] = frame.attrs["draws"]
        if row is not None:
            frame["run_time_ids"] = row.run_time
    frame.attrs = {}  # the stop/progress bookkeeping of a call, not data
    frame.insert(0, "task", task.key)
    frame.insert(1, "prompt_index", np.int64(task.prompt_index))
    return frame.reset_index(drop=True)


def _lens(task: Task, handle) -> pd.DataFrame:
    """logit_lens of the prompt; a suite row gives its IDs and, where it has one, its target."""
    params = dict(task.params)
    variant, prompt = params.pop("variant", "native"), task.prompt
    row = rows.read(prompt, handle, variant) if isinstance(prompt, Mapping) else None
    if row is not None:  # a lens needs no target: a row without a one-token one is read without
        prompt = row.ids
        params.setdefault("target", row.target)
    frame = logit_lens(prompt, model=handle, **params)
    for column in ("top_tokens", "top_ids", "top_probs"):  # tuples: lists for the Parquet files
        frame[column] = frame[column].map(list)
    if row is not None:
        frame["run_time_ids"] = row.run_time
    return frame


def _attribution(task: Task, handle) -> pd.DataFrame:
    """attribution_patch of a suite row's clean prompt against its corrupt_<corruption> twin."""
    params = dict(task.params)
    pair = rows.pair(task.prompt, handle, params.pop("corruption"))  # its columns, or tokenised now
    frame = attribution_patch(pair.clean, pair.corrupt, model=handle, answer=pair.answer, wrong=pair.wrong, **params)
    frame["position"] = frame["position"].astype(np.int64)
    frame["run_time_ids"] = pair.run_time
    return frame


def overflowed(frame: pd.DataFrame) -> int:
    """Noisy runs of a task's rows whose logits overflowed: noise_sweep's rows with finite=False,
    channel_sensitivity's `overflowed` column (its frame is per channel); 0 for compare."""
    if "finite" in frame.columns:
        return int((~frame["finite"].astype(bool)).sum())
    if "overflowed" in frame.columns:
        return int(frame["overflowed"].sum())
    return 0


def _compare(task: Task) -> pd.DataFrame:
    """compare's per-(model, position) frame, each non-reference row with its cross metrics vs the
    reference model at the paired position (NaN where the position has no pair)."""
    params = dict(task.params)
    comparison = compare(task.prompt, models=list(task.models), variant=params.get("variant", "aligned"),
                         track=params.get("track"), device=task.device, progress=False, keep_arrays=False)
    frame = comparison.to_frame()
    cross = comparison.cross.rename(columns={"other": "model_", "other_position": "position_"})
    cross = cross[["model_", "position_", *CROSS]].rename(columns=CROSS)
    cross = cross.rename(columns={"model_": "model", "position_": "position"})
    frame = frame.merge(cross, on=["model", "position"], how="left", validate="one_to_one")
    for column in ("split", "agree"):  # missing on the reference's rows: nullable, not object
        frame[column] = frame[column].astype("boolean")
    frame["ref_position"] = frame["ref_position"].astype("Int64")
    if isinstance(task.prompt, Mapping):
        frame["run_time_ids"] = frame["model"].isin(comparison.run_time_ids)
    return frame
