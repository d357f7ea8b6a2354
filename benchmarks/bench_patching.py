"""Benchmark: the batched patch sweep against the naive loop of one nnsight trace per patch.

A random-weight Mamba at the real mamba-130m shape (transformers' MambaConfig: d_model 768,
24 layers, 50,280 rows; `init_random_` scales), saved and loaded through the public
`load_model` with the GPT-NeoX-20B tokenizer from ../shared/tokenizers; the 14-token IOI pair

    clean    "When Mary and John went to the store, John gave a drink to"   answer " Mary"
    corrupt  "When Mary and John went to the store, Mary gave a drink to"   wrong  " John"

and the full layer × position patch of `h` (24 × 14 = 336 patches). The naive loop is
`patching_ref.traced_patch`, one trace per patch; with ``--sample`` a seeded random sample of
patches is timed and the total extrapolated, which the output says. As in bench_noise, the
paths are timed in rounds, each fast sweep bracketed by halves of the naive sample, and the
median ratio is reported; every timed naive patch is checked against the sweep's row for it.

    python benchmarks/bench_patching.py [--component h] [--sample 48] [--rounds 3] [--threads 2]

The last line is /proc/loadavg: other work on the same cores inflates both times.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
TOKENIZER = Path(__file__).resolve().parents[1] / ".." / "shared" / "tokenizers" / "gpt-neox-20b"


def build(folder: Path, seed: int):
    from transformers import MambaConfig, MambaForCausalLM

    from compare import load_model
    from compare.ssm.mamba import init_random_

    if not TOKENIZER.is_dir():
        raise SystemExit(f"the GPT-NeoX-20B tokenizer is needed at {TOKENIZER} (see shared/tokenizers/README.md)")
    torch.manual_seed(seed)
    model = MambaForCausalLM(MambaConfig(hidden_size=768, num_hidden_layers=24, vocab_size=50280, state_size=16,
                                         expand=2, conv_kernel=4))
    init_random_(model, seed=seed, n_layer=24)
    model.save_pretrained(folder)
    for f in TOKENIZER.iterdir():
        shutil.copy(f, folder / f.name)
    return load_model(folder, device="cpu")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--component", default="h")
    ap.add_argument("--sample", type=int, default=48, help="naive patches timed per round (0: all)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from compare.analyses.patching import patch_sweep, prepare
    from compare.analyses.patching_ref import clean_values, traced_patch

    with tempfile.TemporaryDirectory() as tmp:
        handle = build(Path(tmp) / "mamba-130m-random", args.seed)
    kw = dict(model=handle, answer=" Mary", wrong=" John", component=args.component)
    sweep = prepare(CLEAN, CORRUPT, **kw)[0]
    pairs = [(layer, i) for layer in sweep.layers for i in range(len(sweep.patches))]
    total = len(pairs)
    sample = args.sample if 0 < args.sample < total else total
    print(f"mamba-130m shape (transformers MambaConfig, random weights, saved and loaded); {sweep.T}-token IOI pair; "
          f"component {args.component!r}; {len(sweep.layers)} layers x {len(sweep.patches)} positions = {total} "
          f"patches; {args.threads} threads")
    rng = np.random.default_rng(args.seed)
    fast_times, naive_times, worst = [], [], 0.0

    def naive_sample(n):
        chosen = [pairs[i] for i in rng.choice(total, size=n, replace=False)]
        t = time.perf_counter()
        src = clean_values(sweep)  # the reference's clean trace, counted in its time
        logits = [traced_patch(sweep, layer, src[layer], sweep.patches[i]) for layer, i in chosen]
        return time.perf_counter() - t, list(zip(chosen, logits))

    from compare.analyses.patching import metric_of

    for r in range(args.rounds):
        before, runs = naive_sample(sample // 2)
        t = time.perf_counter()
        df = patch_sweep(CLEAN, CORRUPT, **kw)
        fast_times.append(time.perf_counter() - t)
        after, more = naive_sample(sample - sample // 2)
        naive_times.append((before + after) / sample * total)
        fast = df.set_index(["layer", "position"])["metric_patched"]
        for (layer, i), lg in runs + more:
            m = metric_of(lg[None], sweep.metric, sweep.answer, sweep.wrong)[0]
            worst = max(worst, abs(m - fast[(layer, sweep.labels[i])]))
        print(f"round {r + 1}: fast sweep {fast_times[-1]:.2f} s, naive loop {naive_times[-1]:.1f} s "
              f"({'measured' if sample == total else f'extrapolated from {sample} random patches'}): "
              f"{naive_times[-1] / fast_times[-1]:.1f}x")
    ratios = [n / f for n, f in zip(naive_times, fast_times)]
    print(f"fast sweep: median {np.median(fast_times):.2f} s wall for {len(df)} patches (slowest {max(fast_times):.2f} s)")
    print(f"naive loop (one nnsight trace per patch): median {np.median(naive_times):.1f} s")
    print(f"speed-up: median {np.median(ratios):.1f}x over {args.rounds} rounds "
          f"(range {min(ratios):.1f}x to {max(ratios):.1f}x)")
    print(f"max |logit_diff fast - naive| over the timed naive patches: {worst:.1e}")
    print("/proc/loadavg: " + Path("/proc/loadavg").read_text().strip())


if __name__ == "__main__":
    main()
