"""Benchmark: training a tuned lens at a real shape on CPU, the default run timed to the end.

A random-weight Mamba at the mamba-130m shape (as bench_patching: transformers' MambaConfig,
d_model 768, 24 layers, 50,280 rows, `init_random_` scales) with the GPT-NeoX-20B tokenizer, or
with --family pythia a random pythia-160m (bench_attribution's). The corpus is this
repository's README.md (English prose and code, ~10k tokens); the held-out text is
ui/README.md. It prints

  - one step taken apart (--profile): the frozen model's forward, and per layer the decoding
    and its gradient with the unembedding in bfloat16 and in float32, on batch × seq_len tokens;
  - the default run (`train_tuned_lens` with its default steps, batch, seq_len, lr, warmup and
    head_dtype, or those given): wall time and the process's CPU time (on a machine shared with
    other work the wall time is the load's; CPU time / threads is the wall time alone), peak
    resident memory; the layers the run's own held-out windows of README.md sent back to the
    identity (`lens.meta["held_out"]`);
  - the mean KL(final ‖ layer) per layer on the held-out text, logit lens against tuned lens,
    and the layers where the tuned lens is above the logit lens, by how much.

    python benchmarks/bench_tuned_lens.py [--family mamba] [--profile] [--steps N] [--batch B] [--seq-len n]
                                          [--lr LR] [--warmup W]

The last line is /proc/loadavg: other work on the same cores inflates every time.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench_attribution import build_transformer, timed
from bench_patching import build

ROOT = Path(__file__).resolve().parents[1]


def profile(handle, rows) -> None:
    """One step taken apart, on rows [batch, seq_len]."""
    from compare.analyses.lens import residuals
    from compare.analyses.tuned_lens import HEAD_DTYPES, TunedLens, _step

    lens = TunedLens.identity(handle)
    layers = range(handle.n_layers - 1)
    for _ in range(2):  # the first forward pays one-off allocations
        t = time.perf_counter()
        with torch.no_grad():
            residuals(handle, rows, layers)
        forward = time.perf_counter() - t
    print(f"one step on {rows.shape[0]} x {rows.shape[1]} tokens: the frozen forward {forward:.2f} s")
    for name, dtype in HEAD_DTYPES.items():
        seconds = {}
        for n in (1, 4):
            t = time.perf_counter()
            _step(handle, lens, rows, range(n), dtype)
            seconds[n] = time.perf_counter() - t
        per_layer = (seconds[4] - seconds[1]) / 3
        print(f"  decoding + gradient per layer, head in {name}: {per_layer:.2f} s; a step of {len(layers)} layers "
              f"~{forward + per_layer * len(layers):.1f} s")


def held_out_kl(handle, text: str, lens) -> dict[int, float]:
    """Mean KL(final ‖ layer) per layer over the held-out text's tokens, in windows of 128."""
    from compare.analyses.lens import logit_lens

    ids = handle.encode(text)
    frames = [logit_lens(ids[i:i + 128], model=handle, lens=lens) for i in range(0, len(ids) - 127, 128)]
    import pandas as pd

    return pd.concat(frames).groupby("layer")["kl"].mean().to_dict()


def main():
    from compare.analyses import tuned_lens

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=("mamba", "pythia"), default="mamba")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--steps", type=int, default=tuned_lens.STEPS)
    ap.add_argument("--batch", type=int, default=tuned_lens.BATCH)
    ap.add_argument("--seq-len", type=int, default=tuned_lens.SEQ_LEN)
    ap.add_argument("--lr", type=float, default=tuned_lens.LR)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--head-dtype", default="bfloat16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / f"{args.family}-random"
        handle = build(folder, args.seed) if args.family == "mamba" else build_transformer(folder, args.family, args.seed)
    corpus, held_out = ROOT / "README.md", (ROOT / "ui" / "README.md").read_text()
    print(f"{args.family} at its real shape (random weights); corpus {corpus.name} "
          f"({len(handle.encode(corpus.read_text())):,} tokens); {args.threads} threads")
    if args.profile:
        windows = tuned_lens.corpus_ids(handle, corpus, args.seq_len)
        profile(handle, windows[:args.batch])
    run, cpu = {}, time.process_time()

    def progress(done, total):
        if done % 10 == 0:
            print(f"  step {done}/{total}: {time.process_time() - cpu:.0f} s CPU; load "
                  + Path("/proc/loadavg").read_text().split()[0], flush=True)

    with timed(run):
        lens = tuned_lens.train_tuned_lens(handle, corpus, steps=args.steps, batch=args.batch, seq_len=args.seq_len,
                                           lr=args.lr, warmup=args.warmup, head_dtype=args.head_dtype, seed=args.seed,
                                           progress=progress)
    cpu = time.process_time() - cpu
    print(f"training: {args.steps} steps of {args.batch} x {args.seq_len} tokens, SGD (Nesterov) at lr {args.lr} "
          f"decayed linearly after {args.warmup} warmup steps, head "
          f"{args.head_dtype}: {run['s']:.1f} s wall, {cpu:.1f} s CPU over {args.threads} threads "
          f"({run['s'] / max(args.steps, 1):.2f} s wall per step), peak RSS {run['peak'] / 2**30:.2f} GiB")
    chosen = lens.meta["held_out"]
    print(f"the run's own held-out windows ({len(chosen['windows'])} of {lens.meta['windows']}): identity kept at "
          f"layers {chosen.get('identity_layers', [])}")
    logit, tuned = held_out_kl(handle, held_out, None), held_out_kl(handle, held_out, lens)
    print("held-out KL(final || layer), nats, logit -> tuned lens:")
    print("  " + "; ".join(f"{layer}: {logit[layer]:.4f} -> {tuned[layer]:.4f}" for layer in logit))
    lower = [layer for layer in logit if layer < handle.n_layers - 1 and tuned[layer] < logit[layer]]
    above = {layer: tuned[layer] - logit[layer] for layer in logit if tuned[layer] > logit[layer]}
    print(f"tuned below logit at {len(lower)} of {handle.n_layers - 1} layers; above at "
          + (", ".join(f"{layer} (+{gap:.4f})" for layer, gap in above.items()) or "none"))
    print("/proc/loadavg: " + Path("/proc/loadavg").read_text().strip())


if __name__ == "__main__":
    main()
