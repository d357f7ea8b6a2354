"""Long engine calls behind a streaming callback: progress while they run, Stop that stops them.

An engine call (`noise_sweep`, `channel_sensitivity`, `compare`) runs in a worker thread and
takes `progress(done, total)` and `stop` (a `threading.Event`). The callback iterates `run`,
which wakes every `POLL_SECONDS` with the latest progress, so that:
  - `gr.Progress` is updated from the callback's own thread (it reads Gradio's context there);
  - each step of the callback's generator is short, so Gradio can close it when the event is
    cancelled or the page goes away, and closing it sets `stop`: the engine goes idle at its
    next check instead of holding a core for the rest of the job.
Every Stop button is `stop_handler`: it sets the Event of the session's running job in its view
(`request_stop`), the engine returns what it finished (or raises its `Stopped`), and the callback
says so. No Stop uses Gradio's `cancels=`: Gradio 6 cancels by session and function, not by run
(`/cancel` ends every task named `{session}_{fn_index}`), and answers only once the step in
progress (drawing the figures) is over; the page keeps the run pending until then and drops a click
of its run button meanwhile, so the next run never came. For the same reason run buttons take
`trigger_mode="always_last"`: a click while the previous run ends (just after Stop) runs after it.

After each job a background thread collects garbage and hands freed heap back to the system
(`release_memory`): a job's peak (a sweep's batches, figures) otherwise stays with the server
process, which grew from 0.6 to 6 GB over an hour of use without leaking.

A job waiting in the queue can be stopped too: the run button also fires `submitted` (outside
any queue slot), which counts the session's waiting jobs of the view; a Stop while one waits
marks it, and when it starts (`queued`, the wrapper of every run callback) its engine is handed
a stop already set, so it returns at its first check and the tab shows its "Stopped" note.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import inspect
import queue
import threading
from collections.abc import Callable, Generator
from typing import Any

import gradio as gr

POLL_SECONDS = 0.2

_running: dict[tuple[str, str], threading.Event] = {}
_waiting: dict[tuple[str, str], int] = {}
"""Jobs of a (session, view) submitted and not started."""
_cancelled: set[tuple[str, str]] = set()
"""(session, view)s whose next job to start was stopped while it waited."""
_doomed: set[tuple[str, str]] = set()
"""(session, view)s whose started job is to run with its stop set (`run` reads it)."""
_lock = threading.Lock()


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


LIBC = _libc()


def release_memory() -> None:
    """Collect garbage, then return the allocator's free heap to the system (glibc's
    `malloc_trim`; elsewhere only the collection)."""
    gc.collect()
    if LIBC is not None and hasattr(LIBC, "malloc_trim"):
        LIBC.malloc_trim(0)


def session_key(request, view: str) -> tuple[str, str] | None:
    """(session, view) of a `gr.Request`; None outside a served session (direct calls, tests)."""
    session = getattr(request, "session_hash", None)
    return None if session is None else (session, view)


def request_stop(request, view: str) -> bool:
    """Set the Stop of the session's running job in `view`; False when none is running."""
    with _lock:
        event = _running.get(session_key(request, view))
    if event is None:
        return False
    event.set()
    return True


def cancel_waiting(request, view: str) -> bool:
    """Mark the session's job waiting in `view` as stopped; False when none waits."""
    key = session_key(request, view)
    with _lock:
        if not _waiting.get(key):
            return False
        _cancelled.add(key)
    return True


def stop_handler(view: str, what: str):
    """The Stop button's callback for `view`: stops the session's running job there, else takes
    its waiting one out, else says that no `what` of this session is running or waiting."""
    def stop(request: gr.Request):
        if request_stop(request, view):
            return
        if cancel_waiting(request, view):
            gr.Info(f"Your waiting {what} is stopped: it will not run.")
        else:
            gr.Info(f"No {what} of yours is running or waiting.")
    return stop


def submitted(view: str):
    """A listener for the run button, beside the job's own and outside any queue slot (it runs
    at once): counts the session's job as waiting until `queued` starts it."""
    def mark(request: gr.Request):
        key = session_key(request, view)
        if key is not None:
            with _lock:
                _waiting[key] = _waiting.get(key, 0) + 1
    return mark


def queued(view: str, fn):
    """`fn` (a run callback taking `request`) as started from the queue: its job no longer waits,
    and a job stopped while it waited runs its engine with the stop already set (see `run`)."""
    signature = inspect.signature(fn)

    def start(args, kwargs):
        key = session_key(signature.bind_partial(*args, **kwargs).arguments.get("request"), view)
        if key is None:
            return
        with _lock:
            # run buttons take trigger_mode="always_last": clicks while one waits are one job
            _waiting.pop(key, None)
            if key in _cancelled:
                _cancelled.discard(key)
                _doomed.add(key)
            else:
                _doomed.discard(key)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def streaming(*args, **kwargs):
            start(args, kwargs)
            yield from fn(*args, **kwargs)
        return streaming

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        start(args, kwargs)
        return fn(*args, **kwargs)
    return plain


def skips(n: int) -> tuple:
    """An update of `n` outputs that changes none of them (what a callback yields while it waits)."""
    return tuple(gr.skip() for _ in range(n))


def run(work: Callable[..., Any], *, tick: Any, on_progress: Callable[[int, int], None] | None = None,
        key=None, stop: threading.Event | None = None) -> Generator[Any, None, Any]:
    """Run `work(progress=..., stop=...)` in a thread; yield `tick` every `POLL_SECONDS` (after
    passing the latest (done, total) to `on_progress`, in this thread); return its result, or
    raise its exception. Use as `result = yield from jobs.run(...)` inside a callback.

    key: registers `stop` so that `request_stop` can reach it from another event of the session.
    """
    stop = stop or threading.Event()
    updates: queue.SimpleQueue = queue.SimpleQueue()
    outcome: dict[str, Any] = {}

    def target():
        try:
            outcome["result"] = work(progress=lambda done, total: updates.put((done, total)), stop=stop)
        except BaseException as err:  # noqa: BLE001 — re-raised in the callback's thread
            outcome["error"] = err

    if key is not None:
        with _lock:
            _running[key] = stop
            if key in _doomed:  # stopped while it waited: the engine returns at its first check
                _doomed.discard(key)
                stop.set()
    thread = threading.Thread(target=target, name="ui-job", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(POLL_SECONDS)
            latest = None
            while not updates.empty():
                latest = updates.get()
            if latest is not None and on_progress is not None:
                on_progress(*latest)
            yield tick
    finally:
        stop.set()  # a closed generator (Stop, page closed) leaves the engine nothing to do
        if key is not None:
            with _lock:
                if _running.get(key) is stop:
                    del _running[key]
        threading.Thread(target=release_memory, name="ui-release", daemon=True).start()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
