"""Benchmark: the batched noise sweep against the naive loop of one nnsight trace per run.

A random-weight Mamba at the real mamba-130m shape (d_model 768, 24 layers, 50,280 rows),
the 14-token prompt "When Mary and John went to the store, John gave a drink to", target
" Mary", 24 layers × 100 levels × 1 trial. The naive loop is `noise_ref.traced_run`, one trace
per (layer, level); when it would take too long (``--sample``) a seeded random sample of
(layer, level) pairs is timed and the total extrapolated, which the output says. Load from
other tenants of the machine moves single timings by up to ±20 % over minutes, so the paths
are timed in rounds, each fast sweep bracketed by halves of the naive sample, and the median
ratio is reported. Each timed naive run is checked against the sweep's row for it.

    python benchmarks/bench_noise.py [--component h] [--sample 64] [--rounds 3] [--threads 2] [--draws fresh|ray]

The batched path allocates and frees tensors of tens of MB per layer; glibc may hand such
memory back to the kernel on free, so that allocations pay fresh page faults. Keeping freed
memory in the process is a platform setting, not code (about 3 % on the sweep when last
measured, 24.3 s against 24.7–25.6 s):

    MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=4294967296 python benchmarks/bench_noise.py

The output says whether these variables were set.

fp32 and bf16 side by side (`--bf16-layers`, `--bf16-levels`; skipped with --bf16-layers none):
the fast sweep on the same random weights in both dtypes (`MambaLM.cast_`), on fewer layers and
levels than the timing above (default layers 0, 4, …, 20 and 40 levels in [0, 10], where these
random weights flip on h, one trial: bf16 runs
7× slower than fp32 on a CPU without bf16 matmul hardware, which the output says the CPU has or
lacks). The target is fp32's clean top-1 (random weights do not predict " Mary"). Reported: each
sweep's time, the fraction of identical hit decisions, max |Δp_target|, and per layer the
critical level of each (`phase.phase_transition`) and their difference in units of the fp32
interval's width.
"""
from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch

from compare import load_tokenizer
from compare.ssm import native
from compare.ssm.mamba import MambaConfig, MambaLM, init_random_
from compare.handle.model import Model, cast_module
from compare.families import MAMBA
from compare.analyses.noise import noise_sweep, prepare
from compare.analyses.noise_ref import traced_run
from compare.measures.phase import phase_transition

from bench_mamba import SHAPE, cpu_bf16_line, flops_per_token

PROMPT = "When Mary and John went to the store, John gave a drink to"
TOKENIZER = Path(__file__).resolve().parents[1] / ".." / "shared" / "tokenizers" / "gpt-neox-20b"
FIXED_IDS = [3039, 6393, 285, 2516, 2427, 281, 253, 4657, 13, 2516, 3534, 247, 5484, 281]


class RawIDs:
    """Stand-in tokenizer when the real one is absent: token IDs are their own text."""

    def __len__(self):
        return 50277

    def encode(self, text, add_special_tokens=False):
        return [int(t) for t in text.split()]

    def decode(self, ids):
        return " ".join(map(str, ids))


def build(seed: int, dtype: str = "float32") -> tuple[Model, object, object]:
    torch.manual_seed(seed)
    module = init_random_(MambaLM(MambaConfig(d_model=768, n_layer=24, vocab_size=50280)), seed=seed, n_layer=24)
    module = cast_module(module, dtype)
    if TOKENIZER.is_dir():
        tok = load_tokenizer(TOKENIZER)
        return Model("mamba-130m-random", "mamba", module, tok, len(tok), None), PROMPT, " Mary"
    ids = " ".join(map(str, FIXED_IDS))
    return Model("mamba-130m-random", "mamba", module, RawIDs(), 50277, None), ids, 6393


def arithmetic_bound(T: int, n_layer: int, affine: bool) -> str:
    """FLOPs per run of each path, and the speed-up they allow at equal arithmetic efficiency.

    A naive run is a whole forward (every layer, LM head at every position). A sweep run must
    still push all T positions through every block after the injected one (noise at every
    position reaches the last one through the recurrence) and, unless the component is affine
    (`Point.affine`, its block then runs once per trial), through the injected block too; the
    final block's gate half of in_proj and its out_proj, and the LM head, run at one position.
    """
    d, d_in = SHAPE["d_model"], SHAPE["expand"] * SHAPE["d_model"]
    head = 2 * d * SHAPE["vocab_size"]
    layer = (flops_per_token(**SHAPE) - head) / SHAPE["n_layer"]
    last_only_saves = 2 * 2 * d * d_in * (T - 1)
    naive = T * flops_per_token(**SHAPE)
    blocks = [n_layer - l - (1 if affine else 0) for l in range(n_layer)]
    saved = [last_only_saves if affine or l < n_layer - 1 else 0 for l in range(n_layer)]
    sweep = T * layer * np.mean(blocks) - np.mean(saved) + head
    return (f"arithmetic: naive {naive / 1e9:.2f} GFLOP/run, sweep {sweep / 1e9:.2f} GFLOP/run "
            f"({'affine' if affine else 'non-affine'} component): at equal FLOP/s the ratio would be "
            f"{naive / sweep:.1f}x; the rest comes from batching")


def bf16_against_fp32(args) -> None:
    """The fast sweep in fp32 and in bf16 on the same weights and draws: time, hit decisions,
    critical levels (see the module docstring)."""
    levels = np.linspace(0, args.bf16_max_level, args.bf16_levels)
    frames, seconds, target = {}, {}, None
    for dtype in ("float32", "bfloat16"):
        handle, prompt, _ = build(args.seed, dtype)
        if target is None:  # fp32's clean prediction: random weights do not predict " Mary", so no run would hit
            target = int(handle.logits(handle.encode(prompt) if isinstance(prompt, str) else prompt)[0, -1].argmax())
        t = time.perf_counter()
        frames[dtype] = noise_sweep(prompt, model=handle, target=target, component=args.component,
                                    layers=args.bf16_layers, levels=levels, draws=args.draws)
        seconds[dtype] = time.perf_counter() - t
    full, half = frames["float32"], frames["bfloat16"]
    same = (full["hit"].to_numpy() == half["hit"].to_numpy()).mean()
    dp = np.abs(full["p_target"].to_numpy() - half["p_target"].to_numpy()).max()
    print(f"fp32 vs bf16, component {args.component!r}, target {target} (fp32's clean top-1), layers "
          f"{args.bf16_layers} x {args.bf16_levels} levels in [0, {args.bf16_max_level:g}] x 1 trial ({args.draws} draws, same ε): sweep {seconds['float32']:.1f} s fp32, {seconds['bfloat16']:.1f} s "
          f"bf16 ({seconds['float32'] / seconds['bfloat16']:.2f}x); identical hit decisions {100 * same:.1f} % of "
          f"{len(full)} runs; max |Δp_target| {dp:.2e}")
    pt = {dtype: phase_transition(frame).set_index("layer") for dtype, frame in frames.items()}
    print(f"{'layer':>5} {'c fp32':>8} {'95% CI fp32':>17} {'c bf16':>8} {'status bf16':>14} {'Δc / CI width':>14}")
    for layer, row in pt["float32"].iterrows():
        other = pt["bfloat16"].loc[layer]
        width = row["ci_high"] - row["ci_low"]
        shift = (other["critical_level"] - row["critical_level"]) / width if width > 0 else float("nan")
        print(f"{layer:>5} {row['critical_level']:>8.3f} [{row['ci_low']:>6.3f}, {row['ci_high']:>6.3f}] "
              f"{other['critical_level']:>8.3f} {other['status']:>14} {shift:>14.2f}")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--component", default="h")
    ap.add_argument("--sample", type=int, default=64, help="naive runs timed per round (0: all 2400)")
    ap.add_argument("--rounds", type=int, default=3, help="fast sweep / naive sample pairs, alternated (0: skip)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--draws", default="fresh", choices=["fresh", "ray"],
                    help="noise draws (`noise_sweep`); ray compares with benchmarks from before draws existed")
    ap.add_argument("--bf16-layers", nargs="+", default=["0", "4", "8", "12", "16", "20"],
                    help="layers of the fp32-vs-bf16 sweep ('none': skip it)")
    ap.add_argument("--bf16-levels", type=int, default=40)
    ap.add_argument("--bf16-max-level", type=float, default=10.0,
                    help="levels 0..this; with these random weights noise on h flips the prediction between 3 and 10")
    args = ap.parse_args()
    args.bf16_layers = [] if args.bf16_layers == ["none"] else [int(v) for v in args.bf16_layers]
    torch.set_num_threads(args.threads)
    print(cpu_bf16_line())
    handle, prompt, target = build(args.seed)
    kw = dict(model=handle, target=target, component=args.component, levels=np.linspace(0, 1, 100),
              draws=args.draws)
    sweep = prepare(prompt, **kw)
    print(f"mamba-130m shape, random weights; {sweep.ids.shape[1]} tokens; component {args.component!r}; "
          f"{len(sweep.layers)} layers x {len(sweep.levels)} levels x 1 trial, {args.draws} draws; "
          f"{args.threads} threads; "
          f"tokenizer: {'gpt-neox-20b' if TOKENIZER.is_dir() else 'raw IDs'}; C kernels: "
          f"{'yes' if native.available() else 'no (PyTorch mixer)'}; glibc malloc settings: "
          f"{', '.join(f'{k}={v}' for k, v in os.environ.items() if k.startswith('MALLOC_')) or 'default'}")

    rss0 = peak_rss_mib()
    pairs = [(l, float(v)) for l in sweep.layers for v in sweep.levels]
    draw = dict(sweep.runs)  # each level's ε key (1 trial)
    total = len(pairs)
    sample = args.sample if 0 < args.sample < total else total
    rng = np.random.default_rng(args.seed)
    fast_times, naive_times, worst = [], [], 0.0

    def naive_sample(n):
        chosen = [pairs[i] for i in rng.choice(total, size=n, replace=False)]
        t = time.perf_counter()
        logits = [traced_run(sweep, layer, level, draw[level]) for layer, level in chosen]
        return time.perf_counter() - t, list(zip(chosen, logits))

    # each round brackets one fast sweep with halves of the naive sample, so that the machine's
    # load, which drifts by ±20 % over minutes here, weighs on both paths alike
    for r in range(args.rounds):
        before, runs = naive_sample(sample // 2)
        t = time.perf_counter()
        df = noise_sweep(prompt, **kw)
        fast_times.append(time.perf_counter() - t)
        if r == 0:
            rss_fast = peak_rss_mib()  # before most naive runs
        after, more = naive_sample(sample - sample // 2)
        naive_times.append((before + after) / sample * total)
        # both paths must have computed the same thing: p_target of every timed naive run
        fast_p = df.set_index(["layer", "level"])["p_target"]
        for (layer, level), lg in runs + more:
            worst = max(worst, abs(torch.softmax(lg, -1)[sweep.target].item() - fast_p[(layer, level)]))
        print(f"round {r + 1}: fast sweep {fast_times[-1]:.1f} s, naive loop {naive_times[-1]:.1f} s "
              f"({'measured' if sample == total else f'extrapolated from {sample} random runs'}): "
              f"{naive_times[-1] / fast_times[-1]:.1f}x")
    if args.rounds:
        ratios = [n / f for n, f in zip(naive_times, fast_times)]
        print(f"fast sweep: median {np.median(fast_times):.1f} s for {len(df)} runs (slowest {max(fast_times):.1f} s); "
              f"peak RSS {rss_fast:.0f} MiB ({rss0:.0f} MiB before it: model and libraries)")
        print(f"naive loop (one nnsight trace per run): median {np.median(naive_times):.1f} s")
        print(f"speed-up: median {np.median(ratios):.1f}x over {args.rounds} rounds "
              f"(range {min(ratios):.1f}x to {max(ratios):.1f}x)")
        print(f"max |p_target fast - naive| over the timed naive runs: {worst:.1e}")
        print(arithmetic_bound(sweep.ids.shape[1], len(sweep.layers), MAMBA.point(args.component).affine))
    if args.bf16_layers:
        bf16_against_fp32(args)
    # other work on the same cores inflates both times; the load average says how much there was
    print("load average (1, 5, 15 min): " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
