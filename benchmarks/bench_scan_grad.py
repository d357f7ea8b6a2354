"""Benchmark: the materialised scan with autograd on, as in an nnsight trace that reads h.

In a trace the weights require grad unless the caller turns grad off, so `mamba.MambaMixer`
scans the state under autograd. What autograd keeps for backward is what such a trace costs
in memory beyond the forward itself: with `h` read at every layer of mamba-130m at T = 2048,
A_bar and h are 201 MB a layer each, and anything kept beyond them is multiplied by 24.

Both scans are timed and measured at one layer of mamba-130m's width (d_in 1536, n 16), batch 1:
    linear_scan            the CPU's path (a loop over positions)
    linear_scan_parallel   the GPU's path (chunked doubling), run here on the CPU
For each: forward and forward + backward time, the bytes autograd keeps for backward (distinct
storages, counted by `torch.autograd.graph.saved_tensors_hooks`, the inputs A_bar and w
included), and the largest gradient difference against `linear_scan_ref`'s autograd in fp64 at
a short length (`--check-T`).

    python benchmarks/bench_scan_grad.py [--T 1024] [--check-T 96] [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import torch

from compare.ssm.scan import linear_scan, linear_scan_parallel, linear_scan_ref

D_IN, N = 1536, 16


def inputs(T: int, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    A_bar = torch.rand(1, T, D_IN, N, generator=g, dtype=dtype) * 0.5 + 0.5  # Ā in (0.5, 1): long memory
    write = torch.randn(1, T, D_IN, N, generator=g, dtype=dtype) * 0.1
    return A_bar.requires_grad_(), write.requires_grad_()


def saved_bytes(fn, A_bar, write) -> tuple[int, torch.Tensor]:
    """Bytes of the distinct storages autograd keeps for backward of fn(A_bar, write), and h."""
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        h = fn(A_bar, write)
    return sum(storages.values()), h


def timed(fn, A_bar, write, grad_h):
    start = time.perf_counter()
    h = fn(A_bar, write)
    forward = time.perf_counter() - start
    torch.autograd.grad(h, (A_bar, write), grad_h)
    return forward, time.perf_counter() - start


def max_grad_error(fn, T: int) -> float:
    """Largest |Δ| of dL/dĀ and dL/dw against the reference loop's autograd, in fp64."""
    A_bar, write = inputs(T, torch.float64, seed=1)
    A_bar, write = A_bar[:, :, :64].detach().requires_grad_(), write[:, :, :64].detach().requires_grad_()
    grad_h = torch.randn(write.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got = torch.autograd.grad(fn(A_bar, write), (A_bar, write), grad_h)
    ref = torch.autograd.grad(linear_scan_ref(A_bar, write), (A_bar, write), grad_h)
    return max((g - r).abs().max().item() for g, r in zip(got, ref))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--T", type=int, default=1024)
    parser.add_argument("--check-T", type=int, default=96)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scans = {"linear_scan (CPU path)": linear_scan, "linear_scan_parallel (GPU path)": linear_scan_parallel}
    A_bar, write = inputs(args.T)
    size = A_bar.numel() * A_bar.element_size()
    print(f"T = {args.T}, [1, T, {D_IN}, {N}] fp32: A_bar, w and h are {size / 2**20:.0f} MiB each; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'scan':34} {'kept for backward':>18} {'÷ |h|':>6} {'forward s':>10} {'fwd+bwd s':>10} "
          f"{'max |Δgrad| fp64':>17}")
    grad_h = torch.randn(write.shape, generator=torch.Generator().manual_seed(3))
    for name, fn in scans.items():
        kept, h = saved_bytes(fn, A_bar, write)
        del h
        forward, total = timed(fn, A_bar, write, grad_h)
        print(f"{name:34} {kept / 2**20:14.0f} MiB {kept / size:6.1f} {forward:10.2f} {total:10.2f} "
              f"{max_grad_error(fn, args.check_T):17.1e}")


if __name__ == "__main__":
    main()
