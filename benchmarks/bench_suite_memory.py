"""Peak memory of a prompt suite through `compare(keep_arrays=False)`: flat in the number of prompts.

Random-weight Mamba (mamba-130m shape) and GPT-2 small, real tokenizers from ../shared, a suite
of IOI-style sentences, batch 8. Each size runs in its own process; the peak is the resident
set's high-water mark (VmHWM, reset through /proc/self/clear_refs once the models are built and
warmed up), so it is what the suite itself adds over the loaded models.

    python benchmarks/bench_suite_memory.py [--sizes 100 1000]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import torch

from bench_noise import TOKENIZER, build

NAMES = ["Mary", "John", "Anna", "Paul", "Lisa", "Mark", "Emma", "David", "Sarah", "James"]
PLACES = ["store", "park", "school", "office", "beach", "market", "station", "library"]
OBJECTS = ["drink", "book", "ball", "letter", "gift", "key", "coin", "map"]


def suite(n: int) -> list[str]:
    out = []
    for i in range(n):
        a, b = NAMES[i % 10], NAMES[(i // 10 + 1 + i) % 10]
        out.append(f"When {a} and {b} went to the {PLACES[i % 8]}, {b} gave a {OBJECTS[(i // 8) % 8]} to")
    return out


def gpt2_random():
    from transformers import GPT2Config, GPT2LMHeadModel

    from compare import load_tokenizer
    from compare.handle.model import Model

    torch.manual_seed(0)
    module = GPT2LMHeadModel(GPT2Config(attn_implementation="eager"))
    tok = load_tokenizer(TOKENIZER.parent / "gpt2")
    return Model("gpt2-random", "gpt2", module, tok, len(tok), 1024)


def _vm_hwm() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def measure(n: int, queue) -> None:
    from compare import compare

    torch.set_num_threads(2)
    models = [build(0)[0], gpt2_random()]
    compare(suite(8), models=models, keep_arrays=False, progress=False)  # warm-up: vocabularies, kernels
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _vm_hwm()
    t0 = time.perf_counter()
    results = compare(suite(n), models=models, keep_arrays=False, progress=False)
    queue.put((n, len(results), time.perf_counter() - t0, _vm_hwm() - base))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    for n in args.sizes:
        queue = ctx.Queue()
        proc = ctx.Process(target=measure, args=(n, queue))
        proc.start()
        n, got, seconds, peak = queue.get()
        proc.join()
        print(f"{n:5d} prompts: {got} comparisons in {seconds:.0f} s; peak over the loaded models "
              f"{peak / 2**20:.0f} MiB ({peak / n / 2**10:.0f} KiB per prompt)")


if __name__ == "__main__":
    main()
