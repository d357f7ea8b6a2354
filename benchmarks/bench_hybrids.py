"""Benchmark: a hybrid at the smallest released shape, random weights — Granite-4.0-H-350M's
(32 layers: 28 Mamba-2 + 4 attention at 10, 13, 17, 27; d 768, 100,352 rows; the config of
tests/unit/test_hybrids.py), saved and loaded through the public `load_model` with the GPT-2
tokenizer from ../shared/tokenizers (Granite's own is not stored offline; the IOI pair is 14
tokens in it).

1. Forward: `handle.logits(ids)` (transformers' modules with the package's hook points and its
   hooked Mamba-2 mixer) against transformers' `GraniteMoeHybridForCausalLM` on the same
   weights, on `--tokens` random token IDs; the two are timed alternately, `--rounds` times each,
   and the ratio of medians is reported with the largest |logit difference|.
2. Patch sweep: `patch_sweep` of `--component` over layers 0–23 × the 14 positions of the IOI
   pair (336 patches) against `patching_ref.traced_patch`, one nnsight trace per patch. The naive
   loop is timed on a seeded random sample of `--sample` patches, half before and half after the
   sweep (so that both see the same load), and scaled to all 336 (the output says so); wall and
   process CPU time are both reported; each sampled patch is checked against the sweep's row for it.

    python benchmarks/bench_hybrids.py [--tokens 256] [--rounds 5] [--sample 24] [--threads 2]

The last line is /proc/loadavg: other work on the same cores inflates both times.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
TOKENIZER = ROOT / ".." / "shared" / "tokenizers" / "gpt2"
LAYERS = list(range(24))


def build(folder: Path, seed: int):
    """(the loaded handle, transformers' model) of a random Granite-4.0-H-350M."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import build_granite_hybrid
    from unit.test_hybrids import GRANITE_350M, GRANITE_350M_LAYERS

    from compare import load_model

    if not TOKENIZER.is_dir():
        raise SystemExit(f"the GPT-2 tokenizer is needed at {TOKENIZER} (see shared/tokenizers/README.md)")
    ref = build_granite_hybrid(folder, seed=seed, layer_types=GRANITE_350M_LAYERS, vocab=100352,
                               with_tokenizer=False, **GRANITE_350M)
    torch.manual_seed(seed)
    for p in ref.parameters():  # trained-like magnitudes (the tiny builders' jitter overflows real widths)
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.02)
    ref.save_pretrained(folder)
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
          f"(max |logit diff| {diff:.1e}, max |logit| {expected.abs().max().item():.1f})")


def bench_sweep(handle, component: str, sample: int, seed: int) -> None:
    from compare.analyses.patching import metric_of, patch_sweep, prepare
    from compare.analyses.patching_ref import clean_values, traced_patch

    kw = dict(model=handle, answer=" Mary", wrong=" John", component=component, layers=LAYERS)
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
          f"half after the sweep (1-min load {load[0]} -> {load[1]}):")
    for k in clock:
        print(f"  {k:4s}: fast {fast[k]:.2f} s; naive {scaled[k]:.1f} s: {scaled[k] / fast[k]:.1f}x")
    print(f"  max |logit_diff fast - naive| {worst:.1e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--component", default="resid_post")
    ap.add_argument("--sample", type=int, default=24, help="naive patches timed (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", choices=("forward", "sweep"), help="leave one part out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        handle, ref = build(Path(tmp) / "granite-4.0-h-350m-random", args.seed)
    print(f"granite-4.0-h-350m shape (random weights, saved and loaded), {handle.n_layers} layers; "
          f"{args.threads} threads")
    if args.skip != "forward":
        bench_forward(handle, ref, args.tokens, args.rounds, args.seed)
    if args.skip != "sweep":
        bench_sweep(handle, args.component, args.sample, args.seed)
    print("/proc/loadavg: " + Path("/proc/loadavg").read_text().strip())


if __name__ == "__main__":
    main()
