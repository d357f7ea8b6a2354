"""Benchmark: what keeping interventions to their own call costs (`compare.handle.isolation`).

Every forward on a loaded model holds the model's `ModelLock`, so a sweep and another caller's
`compare()` run one after the other, block by block, instead of at once. On a CPU whose cores a
single forward already uses, running them at once buys little time and gives wrong numbers.
Measured side by side in one run on a random-weight Mamba at the real mamba-130m shape:

    uncontended   one acquire + release of the lock, against one 14-token forward
    contended     a 24-layer × 20-level sweep on `x` (hooked through every chunk) in one
                  thread while another runs `compare()` calls: wall time with the lock against
                  the same work with the lock disabled (the previous behaviour: the results then
                  differ from solo runs, counted), and the longest a `compare()` call waited

    python benchmarks/bench_isolation.py [--calls 20] [--levels 20]
"""
from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import torch

from compare import compare, noise_sweep
from compare.handle.isolation import ModelLock

from bench_noise import build


def run_both(handle, prompt, target, calls: int, levels: np.ndarray):
    """(wall seconds, compare latencies, compare logits, sweep frame) with both threads at once."""
    latencies, logits, sweep = [], [], {}

    def sweeper():
        sweep["df"] = noise_sweep(prompt, model=handle, target=target, component="x", levels=levels, seed=0)

    thread = threading.Thread(target=sweeper)
    start = time.perf_counter()
    thread.start()
    try:
        for _ in range(calls):
            t0 = time.perf_counter()
            logits.append(compare(prompt, models=[handle], progress=False).runs[handle.name].logits)
            latencies.append(time.perf_counter() - t0)
    finally:  # the sweep may still hold the lock's patched methods: let it finish first
        thread.join()
    return time.perf_counter() - start, latencies, logits, sweep["df"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--levels", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    handle, prompt, target = build(0)
    levels = np.linspace(0, 1, args.levels)

    lock, n = ModelLock(), 100_000
    t0 = time.perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    per_lock = (time.perf_counter() - t0) / n
    compare(prompt, models=[handle], progress=False)  # warm-up: C kernels, vocabulary texts
    t0 = time.perf_counter()
    solo_logits = compare(prompt, models=[handle], progress=False).runs[handle.name].logits
    per_compare = time.perf_counter() - t0
    print(f"uncontended: lock acquire+release {per_lock * 1e6:.2f} µs; one compare() {per_compare * 1e3:.0f} ms "
          f"({per_lock / per_compare:.1e} of it)")

    t0 = time.perf_counter()
    solo_sweep = noise_sweep(prompt, model=handle, target=target, component="x", levels=levels, seed=0)
    t_sweep = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.calls):
        compare(prompt, models=[handle], progress=False)
    t_calls = time.perf_counter() - t0
    print(f"solo: sweep {t_sweep:.1f} s, {args.calls} compare() calls {t_calls:.1f} s, "
          f"one after the other {t_sweep + t_calls:.1f} s")

    wall, lat, logits, df = run_both(handle, prompt, target, args.calls, levels)
    wrong = sum(not np.array_equal(L, solo_logits) for L in logits)
    print(f"with the lock: both at once {wall:.1f} s; longest compare() {max(lat):.2f} s, median "
          f"{np.median(lat):.2f} s; {wrong} of {args.calls} compare results and "
          f"{int((df['p_target'] != solo_sweep['p_target']).sum())} sweep rows differ from solo")

    acquire, release = ModelLock.acquire, ModelLock.release
    ModelLock.acquire = ModelLock.release = lambda self: None  # the previous, unguarded behaviour
    try:
        wall_off, lat_off, logits_off, df_off = run_both(handle, prompt, target, args.calls, levels)
    except RuntimeError as err:  # a leaked hook can break the other forward's shapes outright
        print(f"without the lock: crashed ({err})")
    else:
        wrong = sum(not np.array_equal(L, solo_logits) for L in logits_off)
        print(f"without the lock: both at once {wall_off:.1f} s; longest compare() {max(lat_off):.2f} s; "
              f"{wrong} of {args.calls} compare results and "
              f"{int((df_off['p_target'] != solo_sweep['p_target']).sum())} sweep rows differ from solo")
        print(f"cost of isolation: {wall / wall_off:.2f}x the wall time of the unguarded run")
    finally:
        ModelLock.acquire, ModelLock.release = acquire, release


if __name__ == "__main__":
    main()
