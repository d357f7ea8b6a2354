"""`run`: split a study into tasks, skip the finished ones, run the rest on an executor, file each result.

The driver (this process) does all the writing: each Outcome is written (`results.write_task`)
or recorded as failed (`results.write_failure`) as soon as it arrives, then progress is
reported. A progress callback that raises stops the study there: every task reported so far is
on disk, and running the same study again carries on from there.
"""
from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from tqdm.auto import tqdm

from . import executors, results, tasks as tasking
from .spec import Spec, from_mapping, load


@dataclass(frozen=True)
class Progress:
    """Where a study stands, given to the progress callback after every task."""

    done: int  # finished tasks, those finished by earlier runs included
    failed: int  # failed in this run
    total: int
    skipped: int  # finished by earlier runs
    elapsed: float  # seconds in this run
    eta: float | None  # seconds left at this run's pace; None before the first task ends
    key: str  # the task just reported
    seconds: float  # its run time inside its worker (0 for a lost worker)


@dataclass
class Summary:
    """What `run` did; `read(label)` gives an analysis' rows."""

    out: Path
    total: int
    skipped: int
    done: int  # finished tasks in all, skipped ones included
    failed: list[str] = field(default_factory=list)  # keys of the tasks that failed in this run
    seconds: float = 0.0
    # noisy runs of this run's tasks whose logits overflowed: rows with finite=False (noise_sweep)
    # or counted in the `overflowed` column (channel_sensitivity); they are misses, not failures
    overflowed: int = 0

    def read(self, label: str) -> pd.DataFrame:
        return results.read(self.out, label)


def run(spec: Spec | Mapping[str, Any] | str | os.PathLike, out: str | os.PathLike, *,
        executor: str = "embedded", address: str | None = None, workers: int | None = None,
        retries: int = executors.RETRIES, threads: int | None = executors.THREADS, overwrite: bool = False, progress: bool = True,
        callback: Callable[[Progress], Any] | None = None) -> Summary:
    """Run a study (a `Spec`, its mapping form, or a YAML/JSON file) into the folder `out`.

    executor: "embedded" (this process, one task at a time) or "ray" (`executors`).
    address: with "ray", the cluster to join (``ray.init(address=...)``; "auto" finds a local
        one); default: an already-running connection, $RAY_ADDRESS, or a new local instance.
    workers: Ray actors (default: one per CPU of the cluster). retries: Ray attempts after a
        lost worker (the retry policy is in `executors`).
    threads: torch threads per task, in both executors (default 1): rows are identical across
        executors only at the same count. None (embedded only): leave torch's setting alone.
    overwrite: replace a *different* study found in `out` (its own files only); the same study
        is always resumed: its finished tasks are skipped.
    progress: a bar in the terminal. callback: called with a `Progress` after each task.
    Failed tasks are listed in the Summary and recorded in `out/_failed/`; a rerun retries them.
    Noisy runs that overflowed are rows, not failures: the Summary's `overflowed` counts them
    over the tasks of this run (the CLI prints it).
    """
    spec = load(spec) if isinstance(spec, (str, os.PathLike)) else from_mapping(spec)
    if executor not in executors.EXECUTORS:
        raise ValueError(f"executor: unknown {executor!r}; allowed values are {', '.join(executors.EXECUTORS)}")
    if address is not None and (executor != "ray" or not isinstance(address, str)):
        raise ValueError(f"address: a Ray address string, only with executor='ray', got {address!r}")
    if threads is None and executor == "ray":
        raise ValueError("threads: an integer ≥ 1 with executor='ray' (each actor reserves that many CPUs)")
    for name, value, low in (("workers", workers, 1), ("retries", retries, 0), ("threads", threads, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ValueError(f"{name}: must be an integer ≥ {low}, got {value!r}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress: must be True or False, got {progress!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: must be callable with a Progress, or None, got {callback!r}")
    if executor == "ray" and executors.ray is None:
        raise ImportError("executor: 'ray' needs Ray; install it with pip install 'mamba-gpt2-compare[ray]'")

    all_tasks = tasking.split(spec)
    folder = results.open_study(out, spec, len(all_tasks), overwrite=overwrite,
                                run={"executor": executor, "threads": threads})
    done_before = results.finished(folder, (t.key for t in all_tasks))
    todo = [t for t in all_tasks if t.key not in done_before]
    summary = Summary(out=folder, total=len(all_tasks), skipped=len(done_before), done=len(done_before))
    start = time.perf_counter()
    bar = tqdm(total=len(all_tasks), initial=len(done_before), unit="task", disable=not progress,
               desc=f"study {folder.name}")

    def on_outcome(outcome: tasking.Outcome, attempts: int) -> None:
        if outcome.error is None:
            results.write_task(folder, outcome.key, outcome.frame)
            summary.done += 1
            summary.overflowed += tasking.overflowed(outcome.frame)
        else:
            results.write_failure(folder, outcome.key, outcome.error, outcome.traceback, attempts)
            summary.failed.append(outcome.key)
            bar.write(f"task {outcome.key} failed: {outcome.error}")
        bar.update(1)
        if summary.failed:
            bar.set_postfix(failed=len(summary.failed))
        if callback is not None:
            elapsed = time.perf_counter() - start
            ran = summary.done - summary.skipped + len(summary.failed)
            left = summary.total - summary.done - len(summary.failed)
            callback(Progress(done=summary.done, failed=len(summary.failed), total=summary.total,
                              skipped=summary.skipped, elapsed=elapsed, eta=elapsed / ran * left, key=outcome.key,
                              seconds=outcome.seconds))

    try:
        if executor == "ray":
            executors.run_ray(todo, on_outcome, address=address, workers=workers, retries=retries, threads=threads)
        else:
            executors.run_embedded(todo, on_outcome, threads=threads)
    finally:
        bar.close()
    summary.seconds = time.perf_counter() - start
    return summary
