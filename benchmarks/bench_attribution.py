"""Benchmark: attribution patching (every default component, every layer and position, one
forward per prompt and one backward) against the exact `patch_sweep` of one component, in one run.

A random-weight Mamba at the real mamba-130m shape (as bench_patching: transformers' MambaConfig,
d_model 768, 24 layers, 50,280 rows, `init_random_` scales), loaded through `load_model` with the
GPT-NeoX-20B tokenizer from ../shared/tokenizers. At --tokens 14 the pair is the IOI pair

    clean    "When Mary and John went to the store, John gave a drink to"   answer " Mary"
    corrupt  "When Mary and John went to the store, Mary gave a drink to"   wrong  " John"

and at other lengths a seeded random token sequence whose corrupt twin differs at the middle
position (answer and wrong: the clean run's top two tokens). The exact sweep patches every
position, or with --exact-positions a seeded sample of them, its time then scaled to all
positions (said in the output). It also prints the Pearson correlation of the estimates with
the exact effects of the swept component, the time of one plain forward + backward of the
corrupt prompt (the floor), and with --plot a scatter of estimate against exact.

    python benchmarks/bench_attribution.py [--tokens 14] [--component h] [--exact-positions 0] [--threads 2]

The last line is /proc/loadavg: other work on the same cores inflates both times.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_patching import CLEAN, CORRUPT, build


def pair(handle, T: int, seed: int):
    """(clean, corrupt, answer, wrong): the IOI pair at T = 14, else random IDs differing at T // 2."""
    if T == len(handle.encode(CLEAN)):
        return CLEAN, CORRUPT, " Mary", " John"
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, handle.vocab_size, T).tolist()
    corrupt = list(clean)
    corrupt[T // 2] = (clean[T // 2] + 1) % handle.vocab_size
    top = handle.logits(clean)[0, -1].topk(2).indices.tolist()
    return clean, corrupt, top[0], top[1]


def forward_backward(handle, ids) -> float:
    """Seconds of one plain forward + backward of the model on ids (to the sum of the last logits)."""
    t = time.perf_counter()
    with torch.enable_grad():
        out = handle.module(handle.as_input(handle.encode(ids) if isinstance(ids, str) else ids))
        (out if isinstance(out, torch.Tensor) else out.logits)[0, -1].sum().backward()
    seconds = time.perf_counter() - t
    handle.module.zero_grad(set_to_none=True)
    return seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=14)
    ap.add_argument("--component", default="h", help="the component of the exact sweep")
    ap.add_argument("--exact-positions", type=int, default=0, help="positions the exact sweep patches (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", type=Path, default=None, help="write estimate vs exact as a PNG here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from compare import attribution_patch, patch_sweep

    with tempfile.TemporaryDirectory() as tmp:
        handle = build(Path(tmp) / "mamba-130m-random", args.seed)
    clean, corrupt, answer, wrong = pair(handle, args.tokens, args.seed)
    T, L = args.tokens, handle.n_layers
    positions = None
    if 0 < args.exact_positions < T:
        positions = sorted(np.random.default_rng(args.seed).choice(T, args.exact_positions, replace=False).tolist())
    kw = dict(model=handle, answer=answer, wrong=wrong)
    print(f"mamba-130m shape (random weights); {T}-token pair; {L} layers; {args.threads} threads; "
          f"attribution of {', '.join(handle.arch.attribution)} vs exact patch_sweep of {args.component!r}")

    floor = forward_backward(handle, corrupt)
    t = time.perf_counter()
    est = attribution_patch(clean, corrupt, **kw)
    t_attr = time.perf_counter() - t
    t = time.perf_counter()
    exact = patch_sweep(clean, corrupt, component=args.component, positions=positions, **kw)
    t_exact = time.perf_counter() - t
    scaled = t_exact * (T / len(positions) if positions else 1)

    mine = est[est["component"] == args.component].set_index(["layer", "position"])["estimate"]
    change = exact["metric_patched"].to_numpy() - exact.attrs["m_corrupt"][handle.name]
    estimate = mine.loc[list(zip(exact["layer"], exact["position"]))].to_numpy()
    r = np.corrcoef(change, estimate)[0, 1]
    print(f"attribution: {t_attr:.2f} s for {len(est)} estimates ({len(handle.arch.attribution)} components x "
          f"{L} layers x {T} positions); one forward + backward alone: {floor:.2f} s ({t_attr / floor:.1f}x)")
    print(f"exact patch_sweep of {args.component!r}: {t_exact:.2f} s for {len(exact)} patches"
          + (f", scaled to all {T} positions: {scaled:.2f} s" if positions else ""))
    print(f"ratio exact / attribution: {scaled / t_attr:.1f}x")
    print(f"Pearson(estimate, exact change) over {len(change)} (layer, position) of {args.component!r}: {r:.4f}")
    if args.plot is not None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 4))
        ax.scatter(change, estimate, s=8)
        lim = [min(change.min(), estimate.min()), max(change.max(), estimate.max())]
        ax.plot(lim, lim, lw=0.5, color="grey")
        ax.set_xlabel("exact m_patched − m_corrupt")
        ax.set_ylabel("attribution estimate")
        ax.set_title(f"{args.component}, mamba-130m shape, T = {T}, r = {r:.3f}", fontsize=9)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")
    print("/proc/loadavg: " + Path("/proc/loadavg").read_text().strip())


if __name__ == "__main__":
    main()
