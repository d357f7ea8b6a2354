"""Interventions stay in their own call: one lock per loaded model, held by every forward.

Why exclusion and not call-scoped hooks: nnsight routes every call of an instrumented module to
whichever trace is running on it at that moment (`nnsight.intervention.source.State.active`),
from any thread. A plain forward in one thread beside a trace in another would feed that trace
its values and take its edits, and the trace's workers would see another caller's batch. Hooks
that check their owner could protect our own torch hooks but not that, so every forward of the
package (`Model.logits`, the sweeps' chunks, the channels), and every trace opened on
`Model.nn`, holds the model's `ModelLock` from setting up its interventions to removing them.

The lock is reentrant (nnsight runs intervention code on greenlets of the calling thread, and
that code may call the model again) and first-come first-served: a sweep takes it once per
chunk, so a `compare()` waiting beside it runs after the current chunk instead of after the
whole sweep. Python's own locks give no such order: the releasing thread usually wins again.

What it cannot see: a bare ``handle.module(ids)`` call, which bypasses both the handle and
nnsight. Use ``handle.logits`` or ``handle.nn.trace`` when other callers share the model.
"""
from __future__ import annotations

import threading
from collections import deque

from nnsight import NNsight
from nnsight.intervention.tracer import InterleavingTracer

from ..base.hooks import tracing


class ModelLock:
    """A reentrant lock that waiting threads acquire in arrival order."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._queue: deque[object] = deque()  # one token per waiting thread, first come first

    def acquire(self) -> None:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return
            token = object()
            self._queue.append(token)
            try:
                while self._owner is not None or self._queue[0] is not token:
                    self._cond.wait()
            except BaseException:  # interrupted while waiting: leave the queue, or it stalls behind us
                self._queue.remove(token)
                self._cond.notify_all()
                raise
            self._queue.popleft()
            self._owner, self._depth = me, 1

    def release(self) -> None:
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("ModelLock released by a thread that does not hold it")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._cond.notify_all()

    @property
    def waiting(self) -> int:
        """Threads queued for the lock now."""
        with self._cond:
            return len(self._queue)

    def held(self) -> bool:
        """True when the calling thread holds the lock."""
        return self._owner == threading.get_ident()

    def __enter__(self) -> "ModelLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class LockedTracer(InterleavingTracer):
    """nnsight's tracer, running its body and the forward under the model's lock.

    `execute` is where a trace registers its workers on the shared interleaver and runs the
    model; holding the lock across all of it keeps two traces (or a trace and a plain forward)
    from ever sharing the interleaver.
    """

    def execute(self, code) -> None:
        with self.envoy.model_lock, tracing():  # `tracing`: hook points may be requested (`hooks`)
            super().execute(code)


class LockedNNsight(NNsight):
    """`NNsight` over a module shared by several callers: traces and direct calls take `model_lock`.

    ``trace(...)`` uses `LockedTracer` unless another tracer class is asked for (then it must
    subclass `LockedTracer`); ``interleave`` (``trace(..., trace=False)``, edits) holds the lock
    as well.
    """

    def __init__(self, module, lock: ModelLock):
        super().__init__(module)
        self.model_lock = lock

    def trace(self, *args, tracer_cls=None, **kwargs):
        tracer_cls = LockedTracer if tracer_cls is None else tracer_cls
        if not issubclass(tracer_cls, LockedTracer):
            raise TypeError(f"tracer_cls must subclass compare.handle.isolation.LockedTracer so that the trace "
                            f"holds the model's lock, got {tracer_cls.__name__}")
        return super().trace(*args, tracer_cls=tracer_cls, **kwargs)

    def interleave(self, fn, *args, **kwargs):
        with self.model_lock, tracing():
            return super().interleave(fn, *args, **kwargs)
