"""Tokens/s on a CUDA GPU at mamba-130m's shape (random weights, `init_random_`), batch 1, T = 2048.

Paths, each timed in the same process on the same weights (median of --repeats after two warm-ups,
CUDA-synchronised):
    fused             mamba_ssm's MambaLMHeadModel (its fused kernels throughout)      [cuda] extra
    ours, points off  our MambaLM, plain forward: causal_conv1d_fn + selective_scan_fn  [cuda] extra
    ours, pure        the same without the kernels (`cuda.disabled()`): selective_scan_parallel
    ours, h (1 layer) a torch hook reads h at layer 12: that layer materialises Ā, B̄, w, h and
                      scans with `linear_scan_parallel`, the others stay fused
    ours, h (all)     h read at every layer
    ours, h (all), grad on   the same with grad enabled (fp32), as a trace runs unless the caller
                      turns grad off: the peak memory is what autograd keeps (`scan.LinearScan`)
    transformers      MambaForCausalLM (its CUDA fast path when mamba_ssm is installed, else its
                      sequential reference path; the output says which)
Targets (issue #15): points off within 1.2× of fused; h materialised within 5×. Also the
materialised scan alone on one layer's [1, T, 1536, 16] for several chunk sizes, against the
per-position loop it replaces, and fp32 / bf16 side by side for fused and ours.

    python benchmarks/bench_gpu.py [--T 2048] [--repeats 5] [--skip-transformers]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from compare.ssm import cuda
from compare.ssm.mamba import MambaConfig, MambaLM, init_random_
from compare.ssm.scan import linear_scan_parallel

SHAPE = dict(d_model=768, n_layer=24, vocab_size=50280)


def timed(fn, repeats: int) -> float:
    """Median seconds of fn() over `repeats`, after two warm-up calls."""
    times = []
    for i in range(repeats + 2):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def read_h(model: MambaLM, layers) -> list:
    """Torch hooks that read h (returning None: no edit) at `layers`: what a trace reading h costs."""
    return [model.layers[i].mixer.hook_h.register_forward_hook(lambda *args: None) for i in layers]


def timed_reading_h(model: MambaLM, ids, layers, repeats: int, label: str) -> float:
    """`timed` forward with h read at `layers`; prints the peak GPU memory under `label`."""
    hooks = read_h(model, layers)
    torch.cuda.reset_peak_memory_stats()
    try:
        seconds = timed(lambda: model(ids), repeats)
    finally:
        for hook in hooks:
            hook.remove()
    print(f"{label}: peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    return seconds


def build(dtype=torch.float32):
    torch.manual_seed(0)
    ours = init_random_(MambaLM(MambaConfig(**SHAPE)), seed=0, n_layer=SHAPE["n_layer"])
    fused = None
    try:
        from mamba_ssm.models.config_mamba import MambaConfig as SSMConfig
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

        fused = MambaLMHeadModel(SSMConfig(d_model=768, n_layer=24, vocab_size=50277, ssm_cfg={"layer": "Mamba1"}),
                                 device="cuda", dtype=dtype).eval()
        fused.load_state_dict({("backbone." + k.replace("embeddings.", "embedding.") if k != "lm_head.weight" else k): v
                               for k, v in ours.state_dict().items()})
    except ImportError as err:
        print(f"mamba_ssm's MambaLMHeadModel: not available ({err})")
    return ours.cuda().cast_(dtype).eval(), fused


def transformers_model(ours: MambaLM):
    from transformers import MambaConfig as HFConfig, MambaForCausalLM
    from transformers.models.mamba import modeling_mamba

    hf = MambaForCausalLM(HFConfig(vocab_size=SHAPE["vocab_size"], hidden_size=768, num_hidden_layers=24,
                                   state_size=16, use_mambapy=False))
    state = {("backbone." + k if k != "lm_head.weight" else k): v for k, v in ours.state_dict().items()}
    hf.load_state_dict(state)
    fast = getattr(modeling_mamba, "is_fast_path_available", None)
    return hf.cuda().eval(), "CUDA fast path" if fast else "sequential reference path"


def scan_alone(T: int, repeats: int) -> None:
    a = torch.rand(1, T, 1536, 16, device="cuda") * 0.5 + 0.5
    w = torch.randn(1, T, 1536, 16, device="cuda")

    def loop():  # the per-position loop (`scan.linear_scan` on CPU): a launch per position
        h = w.clone()
        for t in range(1, T):
            h[:, t].addcmul_(a[:, t], h[:, t - 1])
        return h

    base = timed(loop, max(1, repeats // 2))
    row = [f"loop {1e3 * base:.2f} ms"]
    for chunk in (4, 8, 16, 32, 64):
        row.append(f"chunk {chunk}: {1e3 * timed(lambda: linear_scan_parallel(a, w, chunk=chunk), repeats):.2f} ms")
    print(f"materialised scan alone, [1, {T}, 1536, 16] fp32: " + ", ".join(row))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-transformers", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no CUDA device")
    T = args.T
    ids = torch.randint(0, 50277, (1, T), generator=torch.Generator().manual_seed(0)).cuda()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, T={T}, batch 1, mamba-130m shape, random "
          f"weights; kernels: {'yes' if cuda.available() else 'no: ' + cuda.reason()}")
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        ours, fused = build(dtype)
        name = str(dtype).removeprefix("torch.")
        with torch.no_grad():
            if fused is not None:
                results[("fused", name)] = timed(lambda: fused(ids), args.repeats)
            if cuda.available():
                results[("ours, points off", name)] = timed(lambda: ours(ids), args.repeats)
            with cuda.disabled():
                results[("ours, pure", name)] = timed(lambda: ours(ids), args.repeats)
            for label, layers in (("ours, h (1 layer)", [12]), ("ours, h (all)", range(24))):
                results[(label, name)] = timed_reading_h(ours, ids, layers, args.repeats, f"{label} {name}")
        if dtype == torch.float32:
            label = "ours, h (all), grad on"
            results[(label, name)] = timed_reading_h(ours, ids, range(24), args.repeats, f"{label} {name}")
        with torch.no_grad():
            if dtype == torch.float32 and not args.skip_transformers:
                hf, which = transformers_model(ours)
                results[(f"transformers ({which})", name)] = timed(lambda: hf(ids), max(1, args.repeats // 2))
                del hf
        del ours, fused
        torch.cuda.empty_cache()
    base = {name: results.get(("fused", name)) for name in ("float32", "bfloat16")}
    print(f"{'path':<48} {'dtype':>9} {'ms':>9} {'tokens/s':>10} {'vs fused':>9}")
    for (label, name), seconds in results.items():
        ratio = f"{seconds / base[name]:.2f}x" if base[name] else "-"
        print(f"{label:<48} {name:>9} {1e3 * seconds:>9.2f} {T / seconds:>10.0f} {ratio:>9}")
    for name in ("float32", "bfloat16"):
        if base[name] and ("ours, points off", name) in results:
            print(f"{name}: points off {results[('ours, points off', name)] / base[name]:.2f}x fused (target ≤ 1.2x); "
                  f"h at every layer {results[('ours, h (all)', name)] / base[name]:.2f}x, at one layer "
                  f"{results[('ours, h (1 layer)', name)] / base[name]:.2f}x (target ≤ 5x)")
    scan_alone(T, args.repeats)


if __name__ == "__main__":
    main()
