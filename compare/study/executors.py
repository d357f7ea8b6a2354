"""Executors: where a study's tasks run. Both call `tasks.execute` and hand each Outcome back.

    embedded   in this process, one task at a time, in task order; no extra dependency.
    ray        Ray actors (`pip install 'mamba-gpt2-compare[ray]'`), on this machine or on a
               cluster (``address``); one actor per worker slot, each loading the study's
               models once (`loading.cached_model`) and running task after task; results are
               streamed back as tasks finish and written by the driver, so workers need no
               shared filesystem.

Threads. Every task runs on `threads` torch threads (default THREADS = 1) in both executors,
and a Ray actor reserves that many CPUs: the thread count changes how float sums are split, so
only the same count gives the same rows (with the same hardware and library versions).

Retry policy (Ray). A task whose worker process dies (killed, out of memory, node lost) is
retried by Ray on the restarted actor, up to `retries` more times (default RETRIES = 3, so 4
attempts); after that it is recorded as failed ("worker lost …") and the study goes on. Actors
restart without limit, so one poisonous task costs its attempts and nothing else. An exception
raised by the analysis is not retried: tasks are deterministic (same inputs, same seed), so it
would only fail again; it is recorded as failed with its traceback at once.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Sequence

from .tasks import Outcome, Task, execute

try:
    import ray
except ImportError:
    ray = None

EXECUTORS = ("embedded", "ray")
RETRIES = 3
THREADS = 1  # torch threads per task, in both executors: the same count gives the same rows (`tasks.execute`)

OnOutcome = Callable[[Outcome, int], None]  # (outcome, attempts)


def run_embedded(tasks: Sequence[Task], on_outcome: OnOutcome, *, threads: int | None = THREADS) -> None:
    for task in tasks:
        on_outcome(execute(task, threads), 1)


class _Worker:
    """A Ray actor's body: the process keeps its loaded models between tasks."""

    def __init__(self, threads: int):
        self.threads = threads

    def run(self, task: Task) -> Outcome:
        return execute(task, self.threads)


def run_ray(tasks: Sequence[Task], on_outcome: OnOutcome, *, address: str | None = None,
            workers: int | None = None, retries: int = RETRIES, threads: int = THREADS) -> None:
    """Run `tasks` on Ray actors of `threads` CPUs each. Uses the running Ray connection if there
    is one, else ``ray.init(address=address)`` (None: a local instance, or $RAY_ADDRESS), shut
    down at the end."""
    if ray is None:
        raise ImportError("executor: 'ray' needs Ray; install it with pip install 'mamba-gpt2-compare[ray]'")
    started = not ray.is_initialized()
    if started:
        # a new local instance needs no dashboard; a cluster keeps its own settings
        ray.init(address=address, **({"include_dashboard": False} if address is None else {}))
    actors = []
    try:
        if workers is None:  # as many as the cluster's CPUs hold: each actor runs one task at a time
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
        worker = ray.remote(_Worker).options(num_cpus=threads, max_restarts=-1, max_task_retries=retries)
        actors = [worker.remote(threads) for _ in range(min(workers, len(tasks)))]
        queue, in_flight = deque(tasks), {}

        def submit(actor) -> None:
            if queue:
                task = queue.popleft()
                in_flight[actor.run.remote(task)] = (task, actor)

        # one task in flight per actor: a task that kills its worker takes no queued innocent task with it
        for actor in actors:
            submit(actor)
        while in_flight:
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            task, actor = in_flight.pop(ref)
            attempts = 1
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as err:  # the worker died on every attempt
                attempts = retries + 1
                first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
                outcome = Outcome(task.key, None, f"worker lost on {attempts} attempts: {type(err).__name__}: "
                                  f"{first_line}", str(err), 0.0)
            submit(actor)
            on_outcome(outcome, attempts)
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()
