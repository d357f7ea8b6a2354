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
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator
from typing import Any

import gradio as gr

POLL_SECONDS = 0.2

_running: dict[tuple[str, str], threading.Event] = {}
_lock = threading.Lock()


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


def stop_handler(view: str, what: str):
    """The Stop button's callback for `view`: stops the session's running job there, else says
    that no `what` of this session is running."""
    def stop(request: gr.Request):
        if not request_stop(request, view):
            gr.Info(f"No {what} of yours is running.")
    return stop


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
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
