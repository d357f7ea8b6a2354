"""Benchmark: a hybrid at the smallest released shape, random weights — Granite-4.0-H-350M's
(32 layers: 28 Mamba-2 + 4 attention at 10, 13, 17, 27; d 768, 100,352 rows) or, with
`--family falcon_h1`, Falcon-H1-0.5B's (36 layers of attention and Mamba-2 side by side; d 1024,
32,784 rows): the configs of tests/unit/test_hybrids.py, saved and loaded through the public
`load_model` with the GPT-2 tokenizer from ../shared/tokenizers (the models' own are not stored
offline; the IOI pair is 14 tokens in it), Falcon-H1 with the tests' word-level tokenizer (GPT-2's
vocabulary is larger than its embedding).

1. Forward: `handle.logits(ids)` (transformers' modules with the package's hook points and its
   hooked Mamba-2 mixer) against transformers' own model class on the same weights, on
   `--tokens` random token IDs (a comma-separated list: each length in turn); the two are timed
   alternately, `--rounds` times each, and the ratio of medians is reported with the largest
   |logit difference|. Then torch's profiler times one forward of each: the share of transformers'
   time in the projections' products (F.linear, the same calls on both sides) bounds the ratio any
   forward that keeps those products can reach. `--onednn` also times the package's forward with
   every product through oneDNN and gives each forward's logits' error against float64 (README:
   why the package does not run them).
2. Patch sweep: `patch_sweep` of `--component` over layers 0–23 (the first 24 layers that have
   it, for a point of one layer kind) × the 14 positions of the IOI pair (336 patches) against `patching_ref.traced_patch`, one nnsight trace per patch. The naive
   loop is timed on a seeded random sample of `--sample` patches, half before and half after the
   sweep (so that both see the same load), and scaled to all 336 (the output says so); wall and
   process CPU time are both reported; each sampled patch is checked against the sweep's row for it.
   `--no-skip` computes every patch: `patch_sweep` skips a patch whose clean and corrupt values are
   bitwise equal at every patched position (it is the corrupt run; exact, so on by default), which
   on the IOI pair is every patch before the first differing token; the flag makes the sweep see
   no such position (its record of them replaced by all-False), so all 336 run.
3. Noise on one SSM layer (`--noise-layers`, e.g. 0,31; skipped when not given): `noise_sweep` of
   `--noise-component` (default h) at those layers of the IOI prompt, `--levels` levels × 1 trial on
   the relative scale, restarted from y (`Point.into_y`: the layer runs once, clean, each run's Δy
   by `HybridFamily.noise_into_y` and the block finished by `block_from_y`) against the same sweep
   with the point's into_y flag off, which runs the noised block per run with its state materialised
   (`restart.run_noised`, the engine before the y-path); the two alternate `--rounds` times, wall
   and process CPU medians are reported with the largest |p_target difference|.

    python benchmarks/bench_hybrids.py [--family granite_hybrid] [--tokens 32,256,1024] [--rounds 5]
                                       [--sample 24] [--threads 2] [--skip forward|sweep|both] [--no-skip]
                                       [--onednn] [--noise-layers 0,31] [--noise-component h] [--levels 50]

The last line is /proc/loadavg: other work on the same cores inflates both times. With two
threads on cores that other work shares, torch's threads wait on each other at every op, which
costs the trace loop's tens of thousands of small matmuls far more than the sweep's few large
ones (README: 10.7–30.1× against 10.9× wall / 9.1× CPU with `--threads 1`, computing every
patch), so `--threads 1` gives the steadier ratio.
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
TOKENIZER = ROOT / ".." / "shared" / "tokenizers" / "gpt2"
LAYERS = list(range(24))


SHAPES = {"granite_hybrid": "granite-4.0-h-350m", "falcon_h1": "falcon-h1-0.5b"}


def build(folder: Path, family: str, seed: int):
    """(the loaded handle, transformers' model) of a random Granite-4.0-H-350M or Falcon-H1-0.5B."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import build_falcon_h1, build_granite_hybrid, tiny_tokenizer
    from unit.test_hybrids import FALCON_H1_05B, GRANITE_350M, GRANITE_350M_LAYERS

    from compare import load_model

    if not TOKENIZER.is_dir():
        raise SystemExit(f"the GPT-2 tokenizer is needed at {TOKENIZER} (see shared/tokenizers/README.md)")
    if family == "granite_hybrid":
        ref = build_granite_hybrid(folder, seed=seed, layer_types=GRANITE_350M_LAYERS, vocab=100352,
                                   with_tokenizer=False, **GRANITE_350M)
    else:
        ref = build_falcon_h1(folder, seed=seed, n_layer=36, vocab=32784, with_tokenizer=False, **FALCON_H1_05B)
    torch.manual_seed(seed)
    for p in ref.parameters():  # trained-like magnitudes (the tiny builders' jitter overflows real widths)
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.02)
    ref.save_pretrained(folder)
    if family == "falcon_h1":  # GPT-2's 50,257 tokens exceed its 32,784 rows: the tests' word-level tokenizer
        return load_model(folder, tokenizer=tiny_tokenizer(), device="cpu"), ref.eval()
    for f in TOKENIZER.iterdir():
        shutil.copy(f, folder / f.name)
    return load_model(folder, device="cpu", force_tokenizer=True), ref.eval()


def bench_forward(handle, ref, tokens: int, rounds: int, seed: int) -> None:
    ids = torch.randint(0, handle.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(seed))
    ours, theirs = [], []
    with torch.no_grad():
        for _ in range(rounds):
            t = time.perf_counter()
            got = handle.logits(ids, padded=True)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            expected = ref(ids).logits
            theirs.append(time.perf_counter() - t)
    diff = (got - expected).abs().max().item()
    print(f"forward of 1 x {tokens} tokens, median of {rounds}: package {np.median(ours):.3f} s, "
          f"transformers {np.median(theirs):.3f} s: {np.median(theirs) / np.median(ours):.2f}x "
          f"(max |logit diff| {diff:.1e}, max |logit| {expected.abs().max().item():.1f}); "
          f"load {' '.join(Path('/proc/loadavg').read_text().split()[:3])}", flush=True)
    print_bound(handle, ref, ids)


PRODUCTS = ("aten::mm", "aten::addmm")  # the projections' matrix products (F.linear), the same calls on both sides


def print_bound(handle, ref, ids) -> None:
    """The share of transformers' forward spent in the projections' products, by torch's profiler (one
    forward each, after the timed ones): both sides run those products through the same `F.linear`,
    so no forward that keeps them can be faster than 1 / share."""
    shares = {}
    with torch.no_grad():
        for side, run in (("transformers", lambda: ref(ids)), ("package", lambda: handle.logits(ids, padded=True))):
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                run()
            events = prof.key_averages()
            total = sum(e.self_cpu_time_total for e in events)
            products = sum(e.self_cpu_time_total for e in events if e.key in PRODUCTS)
            shares[side] = (products / 1e6, total / 1e6)
    (theirs, total), (ours, our_total) = shares["transformers"], shares["package"]
    print(f"  profiled once: the projections' products (F.linear) take {theirs:.3f} s of transformers' "
          f"{total:.3f} s ({theirs / total:.0%}) and {ours:.3f} s of the package's {our_total:.3f} s: "
          f"with those products, at most {total / theirs:.2f}x", flush=True)


class OneDNNLinear(torch.overrides.TorchFunctionMode):
    """Every fp32 `F.linear` inside it through oneDNN (ATen's `mkldnn_linear`) instead of torch's BLAS
    (MKL's sgemm): the alternative `--onednn` measures, not what the package runs."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.linear and args[0].dtype == torch.float32 and not torch.is_grad_enabled():
            x, weight = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            flat = x.reshape(-1, x.shape[-1]).contiguous().to_mkldnn()
            return torch.ops.aten.mkldnn_linear(flat, weight, bias).to_dense().reshape(*x.shape[:-1], weight.shape[0])
        return func(*args, **kwargs)


def bench_onednn(handle, ref, tokens: int, rounds: int, seed: int) -> None:
    """The forward with every projection through oneDNN (`OneDNNLinear`) against transformers' own, and
    the logits' error against a float64 forward of transformers' model for each: what the faster
    product would cost in accuracy."""
    ids = torch.randint(0, handle.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(seed))
    ours, theirs = [], []
    with torch.no_grad():
        for _ in range(rounds):
            t = time.perf_counter()
            with OneDNNLinear():
                fast = handle.logits(ids, padded=True)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            expected = ref(ids).logits
            theirs.append(time.perf_counter() - t)
        plain = handle.logits(ids, padded=True)
        exact = ref.double()(ids).logits
        ref.float()
    print(f"forward of 1 x {tokens} tokens with oneDNN products, median of {rounds}: package {np.median(ours):.3f} s, "
          f"transformers (MKL) {np.median(theirs):.3f} s: {np.median(theirs) / np.median(ours):.2f}x; "
          f"load {' '.join(Path('/proc/loadavg').read_text().split()[:3])}", flush=True)
    for name, got in (("transformers (MKL)", expected), ("package (MKL)", plain), ("package (oneDNN)", fast)):
        error = got.double() - exact
        print(f"  |logits - float64| {name:18s} max {error.abs().max().item():.2e}, "
              f"rms {error.pow(2).mean().sqrt().item():.2e}", flush=True)


def compute_every_patch() -> None:
    """Make `patch_sweep` run the patches it would skip as no-ops (their clean and corrupt values equal)."""
    from compare.analyses import patching

    record = patching.record

    def no_equal_positions(sweep):
        src, entries, finals, same = record(sweep)
        return src, entries, finals, {layer: torch.zeros_like(mask) for layer, mask in same.items()}

    patching.record = no_equal_positions


def bench_sweep(handle, component: str, sample: int, seed: int, every: bool) -> None:
    from compare.analyses.patching import metric_of, patch_sweep, prepare
    from compare.analyses.patching_ref import clean_values, traced_patch

    if every:
        compute_every_patch()

    layers = list(handle.arch.layers_with(handle.module, component))[:len(LAYERS)]  # an SSM point: 24 SSM layers
    kw = dict(model=handle, answer=" Mary", wrong=" John", component=component, layers=layers)
    sweep = prepare(CLEAN, CORRUPT, **kw)[0]
    pairs = [(layer, i) for layer in sweep.layers for i in range(len(sweep.patches))]
    total = len(pairs)
    sample = sample if 0 < sample < total else total
    rng = np.random.default_rng(seed)
    chosen = [pairs[i] for i in rng.choice(total, size=sample, replace=False)]
    clock = {"wall": time.perf_counter, "cpu": time.process_time}
    naive = dict.fromkeys(clock, 0.0)
    logits = []

    def run_naive(part):  # the sampled patches of `part`, timed; the clean trace is counted once, in the first
        start = {k: f() for k, f in clock.items()}
        src = clean_values(sweep)
        logits.extend(traced_patch(sweep, layer, src[layer], sweep.patches[i]) for layer, i in part)
        for k, f in clock.items():
            naive[k] += f() - start[k]

    # the fast sweep bracketed by the two halves of the naive sample, so that both see the same load
    load = [Path("/proc/loadavg").read_text().split()[0]]
    run_naive(chosen[:sample // 2])
    start = {k: f() for k, f in clock.items()}
    df = patch_sweep(CLEAN, CORRUPT, **kw)
    fast = {k: f() - start[k] for k, f in clock.items()}
    run_naive(chosen[sample // 2:])
    load.append(Path("/proc/loadavg").read_text().split()[0])
    scaled = {k: v / sample * total for k, v in naive.items()}
    rows = df.set_index(["layer", "position"])["metric_patched"]
    worst = max(abs(metric_of(lg[None], sweep.metric, sweep.answer, sweep.wrong)[0] - rows[(layer, sweep.labels[i])])
                for (layer, i), lg in zip(chosen, logits))
    print(f"patch sweep of {component!r}, {len(sweep.layers)} layers x {len(sweep.patches)} positions = {total} "
          f"patches ({sweep.T}-token IOI pair), naive loop "
          f"{'measured' if sample == total else f'scaled from {sample} random patches'}, timed half before and "
          f"half after the sweep (1-min load {load[0]} -> {load[1]}); "
          f"{'every patch computed (--no-skip)' if every else 'no-op patches skipped (the default)'}:")
    for k in clock:
        print(f"  {k:4s}: fast {fast[k]:.2f} s; naive {scaled[k]:.1f} s: {scaled[k] / fast[k]:.1f}x")
    print(f"  max |logit_diff fast - naive| {worst:.1e}")


@contextmanager
def noised_block_per_run(arch, component: str):
    """Within: `component` is not `Point.into_y` on `arch`, so `noise_sweep` runs the noised block per run
    (`restart.run_noised`), as before the y-path; the family's own points are back on exit."""
    arch.points = tuple(dataclasses.replace(p, into_y=False) if p.name == component else p for p in arch.points)
    try:
        yield
    finally:
        del arch.points  # the instance's copy: the class's points again


def bench_noise(handle, component: str, layers: list[int], levels: int, rounds: int) -> None:
    from compare import noise_sweep

    kw = dict(model=handle, target=" Mary", component=component, levels=np.linspace(0.0, 2.0, levels).tolist(),
              trials=1, seed=0, scale="relative")
    clock = {"wall": time.perf_counter, "cpu": time.process_time}
    for layer in layers:
        times, frames = {"y": [], "block": []}, {}
        load = [Path("/proc/loadavg").read_text().split()[0]]
        for _ in range(rounds):
            for path in ("y", "block"):
                start = {k: f() for k, f in clock.items()}
                if path == "y":
                    frames[path] = noise_sweep(CLEAN, layers=[layer], **kw)
                else:
                    with noised_block_per_run(handle.arch, component):
                        frames[path] = noise_sweep(CLEAN, layers=[layer], **kw)
                times[path].append({k: f() - start[k] for k, f in clock.items()})
        load.append(Path("/proc/loadavg").read_text().split()[0])
        y, block = (frames[path]["logit_diff"].to_numpy() for path in ("y", "block"))
        diff, moved = np.abs(y - block).max(), np.abs(y - y[0]).max()
        med = {path: {k: np.median([t[k] for t in ts]) for k in clock} for path, ts in times.items()}
        print(f"noise sweep of {component!r} at layer {layer} ({handle.layer_kind(layer)}), {levels} levels x 1 trial, "
              f"medians of {rounds} alternating rounds (1-min load {load[0]} -> {load[1]}); max |logit_diff y - block| "
              f"{diff:.1e}, of the noise {moved:.1e}:")
        for k in clock:
            print(f"  {k:4s}: from y {med['y'][k]:.2f} s; noised block per run {med['block'][k]:.2f} s: "
                  f"{med['block'][k] / med['y'][k]:.2f}x")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=tuple(SHAPES), default="granite_hybrid")
    ap.add_argument("--tokens", default="256", help="prompt lengths, comma-separated (e.g. 32,256,1024)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--component", default="resid_post")
    ap.add_argument("--sample", type=int, default=24, help="naive patches timed (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", choices=("forward", "sweep", "both"), help="leave one part out, or both")
    ap.add_argument("--no-skip", action="store_true", help="compute every patch, the no-op ones too")
    ap.add_argument("--onednn", action="store_true",
                    help="also time the forward with oneDNN's products and give each forward's error against float64")
    ap.add_argument("--noise-layers", default="", help="SSM layers to time the noise sweep at, comma-separated")
    ap.add_argument("--noise-component", default="h")
    ap.add_argument("--levels", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        lengths = [int(t) for t in args.tokens.split(",")]
    except ValueError:
        ap.error(f"--tokens must be positive integers separated by commas, got {args.tokens!r}")
    if not lengths or min(lengths) < 1:
        ap.error(f"--tokens must be positive integers separated by commas, got {args.tokens!r}")
    try:
        noise_layers = [int(t) for t in args.noise_layers.split(",") if t.strip()]
    except ValueError:
        ap.error(f"--noise-layers must be layer numbers separated by commas, got {args.noise_layers!r}")
    with tempfile.TemporaryDirectory() as tmp:
        handle, ref = build(Path(tmp) / f"{SHAPES[args.family]}-random", args.family, args.seed)
    print(f"{SHAPES[args.family]} shape (random weights, saved and loaded), {handle.n_layers} layers; "
          f"{args.threads} threads")
    if args.skip not in ("forward", "both"):
        for tokens in lengths:
            bench_forward(handle, ref, tokens, args.rounds, args.seed)
            if args.onednn:
                bench_onednn(handle, ref, tokens, args.rounds, args.seed)
    if args.skip not in ("sweep", "both"):
        bench_sweep(handle, args.component, args.sample, args.seed, args.no_skip)
    if noise_layers:
        bench_noise(handle, args.noise_component, noise_layers, args.levels, args.rounds)
    print("/proc/loadavg: " + Path("/proc/loadavg").read_text().strip())


if __name__ == "__main__":
    main()
