"""Tokens/s of the interpretable Mamba vs transformers' reference path at mamba-130m's real shape.

Random weights (`init_random_`), fp32, CPU, one process per measurement. Peak memory is the
growth of the resident set's high-water mark (VmHWM, reset through /proc/self/clear_refs once
the model is built) over the loaded model: what the forward itself needs. Both sides compute
full logits [1, T, 50280]. Prints ratios measured side by side in one run.

    python benchmarks/bench_mamba.py [--lengths 14 256 1024] [--repeats 3]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import gc
import time

import torch

from compare import native

SHAPE = dict(d_model=768, n_layer=24, vocab_size=50280, d_state=16, d_conv=4, expand=2)


def flops_per_token(d_model, n_layer, vocab_size, d_state, d_conv, expand) -> float:
    """Multiply-adds ×2 of every matmul, plus the SSM's elementwise work, per token."""
    d_in, r = expand * d_model, -(-d_model // 16)
    matmuls = d_model * 2 * d_in + d_in * (r + 2 * d_state) + r * d_in + d_in * d_model
    conv = d_in * d_conv
    ssm = d_in * d_state * 4  # Δ·A, exp, Ā·h + w, C·h: ~8 flops per (channel, state) counted as 4 MACs
    return 2 * (n_layer * (matmuls + conv + ssm) + d_model * vocab_size)


def gemm_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _build(impl: str):
    from compare.mamba import MambaConfig, MambaLM, init_random_

    torch.manual_seed(0)
    if impl == "ours":
        model = MambaLM(MambaConfig(**SHAPE))
    else:
        from transformers import MambaConfig as HFConfig, MambaForCausalLM

        model = MambaForCausalLM(HFConfig(vocab_size=SHAPE["vocab_size"], hidden_size=SHAPE["d_model"],
                                          num_hidden_layers=SHAPE["n_layer"], state_size=SHAPE["d_state"],
                                          use_mambapy=False))
    return init_random_(model, seed=0, n_layer=SHAPE["n_layer"]).eval()


def _measure(impl: str, T: int, repeats: int, queue) -> None:
    model = _build(impl)
    ids = torch.randint(0, 50277, (1, T), generator=torch.Generator().manual_seed(T))
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    base = _status_kib("VmRSS")
    with torch.no_grad():
        model(ids)  # warm-up: allocator and thread pools
        seconds = min(_timed(lambda: model(ids)) for _ in range(repeats))
    queue.put((seconds, (_status_kib("VmHWM") - base) / 1024))


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def measure(impl: str, T: int, repeats: int) -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(impl, T, repeats, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[14, 256, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    peak = gemm_peak_gflops()
    fpt = flops_per_token(**SHAPE)
    print(f"threads={torch.get_num_threads()}  fp32 GEMM peak={peak:.1f} GFLOP/s  "
          f"model={fpt / 1e6:.1f} MFLOP/token (mamba-130m shape, random weights)  "
          f"C kernels: {'yes' if native.available() else 'no (PyTorch mixer)'}")
    print(f"{'T':>5} | {'ours tok/s':>10} {'%peak':>6} {'mem MiB':>8} | {'transformers tok/s':>18} {'%peak':>6} "
          f"{'mem MiB':>8} | {'speed-up':>8}")
    for T in args.lengths:
        ours_s, ours_mem = measure("ours", T, args.repeats)
        ref_s, ref_mem = measure("transformers", T, args.repeats)
        ours_tps, ref_tps = T / ours_s, T / ref_s
        print(f"{T:>5} | {ours_tps:>10.1f} {100 * ours_tps * fpt / 1e9 / peak:>5.1f}% {ours_mem:>8.0f} | "
              f"{ref_tps:>18.1f} {100 * ref_tps * fpt / 1e9 / peak:>5.1f}% {ref_mem:>8.0f} | "
              f"{ref_s / ours_s:>7.2f}x")


if __name__ == "__main__":
    main()
