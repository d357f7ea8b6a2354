"""Interventions stay in their own call: results beside concurrent sweeps and traces equal solo runs.

The app serves several users over one loaded model, so every check here runs two kinds of work
on the same `Model` from two threads and holds each result against the same work done alone.
Bit-identical, not close: an intervention leaking into another forward changes it by far more
than rounding, and nothing else differs between the two runs.
"""
from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
import torch

from compare import compare, noise_sweep
from compare.analyses.channels import channel_sensitivity
from compare.handle.isolation import LockedTracer, ModelLock

PROMPT = "When Mary and John went to the store , John gave a drink to"
COMPONENTS = {"mamba": ("h", "delta", "y", "resid_post"), "gpt2": ("resid_post", "q", "attn_out", "mlp_out")}
LEVELS = np.linspace(0, 4, 12)


def _sweep(handle, component):
    return noise_sweep(PROMPT, model=handle, target="Mary", component=component, levels=LEVELS, trials=2,
                       scale="relative", seed=3)


def _beside(work, other, n):
    """Run `work()` n times in this thread while `other()` loops in another; both results lists."""
    done, errors, others = threading.Event(), [], []

    def loop():
        try:
            while not done.is_set():
                others.append(other())
        except BaseException as err:  # surfaced in the test thread below
            errors.append(err)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        mine = [work() for _ in range(n)]
    finally:
        done.set()
        thread.join()
    if errors:
        raise errors[0]
    return mine, others


def test_compare_beside_sweeps_on_every_component(tiny):
    handles, _ = tiny
    models = [handles["mamba"], handles["gpt2"]]
    jobs = [(handles[family], c) for family, comps in COMPONENTS.items() for c in comps]
    solo_sweeps = {(h.name, c): _sweep(h, c) for h, c in jobs}
    solo = compare(PROMPT, models=models, progress=False)
    it = iter(range(10**9))

    def sweep():
        h, c = jobs[next(it) % len(jobs)]
        return (h.name, c), _sweep(h, c)

    runs, sweeps = _beside(lambda: compare(PROMPT, models=models, progress=False), sweep, 200)
    assert len(sweeps) >= len(jobs)  # every component was swept while compare() ran
    for c in runs:
        for name, run in c.runs.items():
            np.testing.assert_array_equal(run.logits, solo.runs[name].logits)
    for key, df in sweeps:
        pd.testing.assert_frame_equal(df, solo_sweeps[key], check_exact=True)


@pytest.mark.parametrize("family", ["mamba", "gpt2"])
def test_two_concurrent_sweeps_equal_their_solo_runs(tiny, family):
    handle = tiny[0][family]
    a, b = COMPONENTS[family][0], COMPONENTS[family][-1]
    solo_a, solo_b = _sweep(handle, a), _sweep(handle, b)
    got_a, got_b = _beside(lambda: _sweep(handle, a), lambda: _sweep(handle, b), 6)
    assert got_b
    for df in got_a:
        pd.testing.assert_frame_equal(df, solo_a, check_exact=True)
    for df in got_b:
        pd.testing.assert_frame_equal(df, solo_b, check_exact=True)


def test_channels_beside_plain_forwards(tiny):
    handle = tiny[0]["mamba"]
    ids = handle.encode(PROMPT)
    clean = handle.logits(ids)
    channels = lambda: channel_sensitivity(PROMPT, model=handle, target="Mary", component="h", layer=0,
                                           level=2.0, trials=2)
    solo = channels()
    logits, got = _beside(lambda: handle.logits(ids), channels, 100)
    assert got
    for L in logits:
        torch.testing.assert_close(L, clean, rtol=0, atol=0)
    for df in got:
        pd.testing.assert_frame_equal(df, solo, check_exact=True)


@pytest.mark.parametrize("family,component", [("mamba", "h"), ("gpt2", "resid_post")])
def test_raw_nnsight_trace_beside_plain_forwards(tiny, family, component):
    """A hand-written trace in one thread never edits another thread's forward, nor sees it."""
    handle = tiny[0][family]
    ids = handle.as_input(handle.encode(PROMPT))

    def traced():
        with handle.nn.trace(ids):
            value = handle.point(component, 0)
            value[:, 2:] += 5.0
            seen = value.save()
            logits = handle.point("logits").save()
        return seen.clone(), logits[0, :, : handle.vocab_size].clone()

    solo_seen, solo_logits = traced()
    clean = handle.logits(ids)[0]
    assert not torch.equal(solo_logits, clean)  # the edit does change the output
    plain, traces = _beside(lambda: handle.logits(ids)[0], traced, 200)
    assert traces
    for L in plain:
        torch.testing.assert_close(L, clean, rtol=0, atol=0)
    for seen, logits in traces:
        torch.testing.assert_close(seen, solo_seen, rtol=0, atol=0)
        torch.testing.assert_close(logits, solo_logits, rtol=0, atol=0)


def test_a_trace_holds_the_model_lock_while_it_runs(tiny):
    handle = tiny[0]["mamba"]
    held = []
    hook = handle.module.layers[0].register_forward_hook(lambda *_: held.append(handle.lock.held()))
    try:
        with handle.nn.trace(handle.as_input(handle.encode(PROMPT))):
            handle.point("logits").save()
        handle.logits(handle.encode(PROMPT))
    finally:
        hook.remove()
    assert held == [True, True]


def test_another_tracer_class_must_hold_the_lock(tiny):
    from nnsight.intervention.tracer import InterleavingTracer

    handle = tiny[0]["gpt2"]
    with pytest.raises(TypeError, match="LockedTracer"):
        handle.nn.trace(handle.as_input([1, 2]), tracer_cls=InterleavingTracer)
    assert issubclass(LockedTracer, InterleavingTracer)


def test_stopped_sweep_keeps_finished_layers(tiny):
    handle = tiny[0]["mamba"]
    stop, calls = threading.Event(), []

    def progress(done, total):
        calls.append((done, total))
        stop.set()  # after the first layer

    df = noise_sweep(PROMPT, model=handle, target="Mary", component="h", levels=LEVELS, progress=progress, stop=stop)
    full = _sweep_levels(handle)
    assert calls == [(1, 2)]
    assert df.attrs["stopped"] and df.attrs["layers_done"] == (0,)
    pd.testing.assert_frame_equal(df, full[full["layer"] == 0], check_exact=True)
    assert not full.attrs["stopped"] and full.attrs["layers_done"] == (0, 1)


def _sweep_levels(handle):
    return noise_sweep(PROMPT, model=handle, target="Mary", component="h", levels=LEVELS)


def test_stopped_channels_keep_whole_channels(tiny):
    handle = tiny[0]["gpt2"]
    stop = threading.Event()
    stop.set()
    df = channel_sensitivity(PROMPT, model=handle, target="Mary", component="resid_post", layer=0, level=1.0,
                             trials=3, stop=stop)
    assert df.attrs["stopped"] and len(df) == 0
    with pytest.raises(ValueError, match="stop: must have an is_set"):
        noise_sweep(PROMPT, model=handle, target="Mary", component="resid_post", stop=True)
    with pytest.raises(ValueError, match="progress: must be a callable"):
        noise_sweep(PROMPT, model=handle, target="Mary", component="resid_post", progress=3)


def test_model_lock_is_reentrant_and_owned():
    lock = ModelLock()
    with lock:
        with lock:
            assert lock.held()
        assert lock.held()
    assert not lock.held()
    with pytest.raises(RuntimeError, match="does not hold"):
        lock.release()


def test_model_lock_serves_waiters_in_arrival_order():
    lock, order, queued = ModelLock(), [], []
    lock.acquire()

    def take(name, ready):
        ready.set()
        with lock:
            order.append(name)

    threads = []
    for name in ("first", "second", "third"):
        ready = threading.Event()
        t = threading.Thread(target=take, args=(name, ready))
        t.start()
        ready.wait()
        while lock.waiting < len(threads) + 1:  # the thread has taken its ticket
            threading.Event().wait(0.001)
        threads.append(t)
    lock.release()
    for t in threads:
        t.join()
    assert order == ["first", "second", "third"]


def test_a_waiter_interrupted_while_queued_does_not_stall_the_lock():
    """A thread that leaves the queue by an exception (e.g. KeyboardInterrupt) must not keep its place."""
    lock, got = ModelLock(), []
    wait = lock._cond.wait

    def interrupted_wait(*args):
        if threading.current_thread().name == "interrupted":
            raise KeyboardInterrupt
        return wait(*args)

    lock._cond.wait = interrupted_wait
    lock.acquire()
    a = threading.Thread(target=lambda: pytest.raises(KeyboardInterrupt, lock.acquire), name="interrupted")
    a.start()
    a.join()
    b = threading.Thread(target=lambda: (lock.acquire(), got.append("b"), lock.release()))
    b.start()
    while lock.waiting < 1:
        threading.Event().wait(0.001)
    lock.release()
    b.join(timeout=10)
    assert got == ["b"] and lock.waiting == 0


@pytest.mark.parametrize("family", ["mamba", "granite_hybrid"])
def test_attribution_lens_and_patching_beside_each_other_equal_their_solo_runs(tiny, family):
    """attribution_patch (its block-by-block backward and, with steps, the embedding edit of the
    path), logit_lens (its record_pass, then its head calls) and patch_sweep of h (the wavefront)
    from two threads on one handle: every result bit-identical to the same call alone."""
    from compare import attribution_patch, logit_lens, patch_sweep

    handle, corrupt, kw = tiny[0][family], PROMPT.replace(", John", ", Mary"), dict(answer=" Mary", wrong=" John")
    jobs = [lambda: attribution_patch(PROMPT, corrupt, model=handle, steps=2, **kw),
            lambda: logit_lens(PROMPT, model=handle),
            lambda: patch_sweep(PROMPT, corrupt, model=handle, component="h", **kw),
            lambda: attribution_patch(PROMPT, corrupt, model=handle, **kw)]
    solo = [job() for job in jobs]
    it = iter(range(10**9))

    def other():
        i = 1 + next(it) % 3
        return i, jobs[i]()

    mine, others = _beside(jobs[0], other, 4)
    assert others
    for df in mine:
        pd.testing.assert_frame_equal(df, solo[0], check_exact=True)
    for i, df in others:
        pd.testing.assert_frame_equal(df, solo[i], check_exact=True)
