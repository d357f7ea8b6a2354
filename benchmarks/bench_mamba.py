"""Tokens/s of the interpretable Mamba vs transformers' reference path at mamba-130m's real shape.

Random weights (`init_random_`), CPU, one process per measurement; ours in fp32 and in bf16
(`MambaLM.cast_`: matmuls in bf16, scan and residual stream fp32), transformers in fp32. Peak
memory is the growth of the resident set's high-water mark (VmHWM, reset through
/proc/self/clear_refs once the model is built) over the loaded model: what the forward itself
needs. Every path computes full logits [1, T, 50280]. Prints ratios measured side by side in one
run, and whether the CPU has bf16 matmul hardware (AMX / AVX512-BF16, from /proc/cpuinfo): without
it bf16 is slower than fp32, and the issue's targets (forward at T = 1024 ≥ 2× faster in bf16)
apply to CPUs with it only.

Accuracy of bf16 (`--suite`, default 8 prompts of 64 random tokens, seeded): top-1 agreement with
fp32 over every position, max |ΔP| and max |ΔL| over the real vocabulary.

    python benchmarks/bench_mamba.py [--lengths 14 256 1024] [--repeats 3] [--suite 8] [--dtypes float32 bfloat16]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import gc
import time

import torch

from compare.ssm import native
from compare.handle.model import parse_dtype

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


def linear_gflops(dtype: torch.dtype, rows: int = 1024, repeats: int = 2) -> float:
    """GFLOP/s of an in_proj-shaped `linear` (rows × 768 → 3072), the model's largest matmul;
    the issue's AMX measurement was 1,620 GFLOP/s in bf16 at 1,400 rows."""
    x, w = torch.randn(rows, SHAPE["d_model"], dtype=dtype), torch.randn(2 * 2 * SHAPE["d_model"], SHAPE["d_model"], dtype=dtype)
    torch.nn.functional.linear(x, w)
    best = min(_timed(lambda: torch.nn.functional.linear(x, w)) for _ in range(repeats))
    return 2 * x.shape[0] * w.shape[0] * w.shape[1] / best / 1e9


def cpu_bf16_line() -> str:
    """Whether this CPU runs bf16 matmuls in hardware, as /proc/cpuinfo and torch see it."""
    units = native.matmul_units(torch.bfloat16)
    flags = "unknown (no /proc/cpuinfo)" if units is None else (", ".join(units) or "none (no amx_bf16, avx512_bf16)")
    return f"CPU bf16 matmul hardware: {flags}; torch CPU capability {torch.backends.cpu.get_cpu_capability()}"


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _build(impl: str, dtype: str = "float32"):
    from compare.ssm.mamba import MambaConfig, MambaLM, init_random_

    torch.manual_seed(0)
    if impl == "ours":
        model = MambaLM(MambaConfig(**SHAPE))
    else:
        from transformers import MambaConfig as HFConfig, MambaForCausalLM

        model = MambaForCausalLM(HFConfig(vocab_size=SHAPE["vocab_size"], hidden_size=SHAPE["d_model"],
                                          num_hidden_layers=SHAPE["n_layer"], state_size=SHAPE["d_state"],
                                          use_mambapy=False))
    model = init_random_(model, seed=0, n_layer=SHAPE["n_layer"]).eval()
    return model.cast_(parse_dtype(dtype)) if impl == "ours" else model


def _measure(impl: str, T: int, repeats: int, queue, dtype: str = "float32") -> None:
    model = _build(impl, dtype)
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


def measure(impl: str, T: int, repeats: int, dtype: str = "float32") -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(impl, T, repeats, queue, dtype))
    proc.start()
    result = queue.get()
    proc.join()
    return result


@torch.no_grad()
def bf16_accuracy(prompts: int, T: int, seed: int = 0) -> str:
    """bf16 against fp32 on one random-weight model: top-1 agreement over every position of a
    seeded suite of random prompts, max |ΔP| and max |ΔL| over the real vocabulary (50,277)."""
    fp32, bf16 = _build("ours"), _build("ours", "bfloat16")
    g = torch.Generator().manual_seed(seed)
    agree, positions, dP, dL = 0, 0, 0.0, 0.0
    for _ in range(prompts):
        ids = torch.randint(0, 50277, (1, T), generator=g)
        full, half = fp32(ids)[..., :50277], bf16(ids)[..., :50277].float()
        agree += (full.argmax(-1) == half.argmax(-1)).sum().item()
        positions += T
        dP = max(dP, (full.softmax(-1) - half.softmax(-1)).abs().max().item())
        dL = max(dL, (full - half).abs().max().item())
    return (f"bf16 vs fp32 over {prompts} prompts × {T} random tokens (seed {seed}): top-1 agreement "
            f"{agree}/{positions} = {100 * agree / positions:.1f} %, max |ΔP| {dP:.2e}, max |ΔL| {dL:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[14, 256, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--suite", type=int, default=8, help="prompts of the bf16 accuracy suite (0: skip)")
    parser.add_argument("--suite-length", type=int, default=64)
    args = parser.parse_args()

    peak = gemm_peak_gflops()
    fpt = flops_per_token(**SHAPE)
    print(f"threads={torch.get_num_threads()}  fp32 GEMM peak={peak:.1f} GFLOP/s  "
          f"in_proj-shaped linear: fp32 {linear_gflops(torch.float32):.1f}, "
          f"bf16 {linear_gflops(torch.bfloat16):.1f} GFLOP/s  "
          f"model={fpt / 1e6:.1f} MFLOP/token (mamba-130m shape, random weights)  "
          f"C kernels: {'yes' if native.available() else 'no (PyTorch mixer)'}")
    print(cpu_bf16_line())
    ours = [f"{'ours ' + d + ' tok/s':>22} {'%peak':>6} {'mem MiB':>8}" for d in args.dtypes]
    print(f"{'T':>5} | " + " | ".join(ours) + f" | {'transformers tok/s':>18} {'%peak':>6} {'mem MiB':>8} | speed-up")
    for T in args.lengths:
        cells, seconds = [], {}
        for dtype in args.dtypes:
            seconds[dtype], mem = measure("ours", T, args.repeats, dtype)
            tps = T / seconds[dtype]
            cells.append(f"{tps:>22.1f} {100 * tps * fpt / 1e9 / peak:>5.1f}% {mem:>8.0f}")
        ref_s, ref_mem = measure("transformers", T, args.repeats)
        ref_tps = T / ref_s
        ratios = ", ".join(f"{d} {ref_s / s:.2f}x" for d, s in seconds.items())
        if len(seconds) == 2:
            ratios += f"; bf16 vs fp32 {seconds['float32'] / seconds['bfloat16']:.2f}x"
        print(f"{T:>5} | " + " | ".join(cells) + f" | {ref_tps:>18.1f} {100 * ref_tps * fpt / 1e9 / peak:>5.1f}% "
              f"{ref_mem:>8.0f} | {ratios}")
    if args.suite:
        print(bf16_accuracy(args.suite, args.suite_length))


if __name__ == "__main__":
    main()
