"""Benchmark: the logit lens of every layer at a real shape, against one plain forward.

A random-weight Mamba at the mamba-130m shape (bench_patching's: transformers' MambaConfig,
d_model 768, 24 layers, 50,280 rows, `init_random_` scales) with the GPT-NeoX-20B tokenizer.
For each length in --lengths, `logit_lens` of every layer at every position (--positions all)
or at the last only (--positions last): at 14 tokens the IOI prompt, at other lengths a seeded
random token sequence; --repeat calls, the median's wall and CPU seconds (this process's
threads), with `Model.logits` of the same prompt timed beside it. A lens of every layer
decodes L · P rows with the LM head, so it costs about L head matmuls more than a forward.

    python benchmarks/bench_lens.py [--lengths 14,256] [--positions all] [--repeat 3] [--threads 1]

Run it on two checkouts (PYTHONPATH) in one session to compare them: with --threads 1 a thread
never waits for another to be scheduled on shared cores. The first and last lines give
/proc/loadavg: other work on the same cores inflates every time.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_patching import CLEAN, build


def timed(call, repeat: int) -> tuple[float, float]:
    """Median wall and CPU seconds of `repeat` calls (after one untimed call that pays one-off allocations)."""
    call()
    walls, cpus = [], []
    for _ in range(repeat):
        t, cpu = time.perf_counter(), time.process_time()
        call()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def main():
    from compare import logit_lens

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="14,256")
    ap.add_argument("--positions", choices=("all", "last"), default="all")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("loadavg", Path("/proc/loadavg").read_text().strip())
    import compare

    print(f"compare from {Path(compare.__file__).parent}; {args.threads} thread(s); positions {args.positions}")
    with tempfile.TemporaryDirectory() as tmp:
        handle = build(Path(tmp) / "mamba-130m-random", args.seed)
    for T in map(int, args.lengths.split(",")):
        rng = np.random.default_rng(args.seed)
        ids = handle.encode(CLEAN) if T == len(handle.encode(CLEAN)) else rng.integers(0, handle.vocab_size, T).tolist()
        positions = None if args.positions == "all" else [-1]
        lens = timed(lambda: logit_lens(ids, model=handle, positions=positions), args.repeat)
        forward = timed(lambda: handle.logits(ids), args.repeat)
        print(f"T = {T}: logit_lens {lens[0]:.3f} s wall, {lens[1]:.3f} s CPU; one forward {forward[0]:.3f} s wall, "
              f"{forward[1]:.3f} s CPU ({lens[1] / forward[1]:.1f} forwards)", flush=True)
    print("loadavg", Path("/proc/loadavg").read_text().strip())


if __name__ == "__main__":
    main()
