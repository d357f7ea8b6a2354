"""Benchmark: attribution patching (every default component, every layer and position, one
forward per prompt and one backward) against the exact `patch_sweep` of one component, and
against one plain forward + backward, in one run.

Random weights at a real shape, loaded through `load_model` with the real tokenizer from
../shared/tokenizers: --family mamba (mamba-130m as bench_patching: transformers' MambaConfig,
d_model 768, 24 layers, 50,280 rows, `init_random_` scales), pythia (pythia-160m: 12 layers,
d 768, 12 heads, 50,304 rows, transformers' init) or gpt2 (gpt2: 12 layers, d 768, 50,257
rows). At --tokens 14 the pair is the IOI pair

    clean    "When Mary and John went to the store, John gave a drink to"   answer " Mary"
    corrupt  "When Mary and John went to the store, Mary gave a drink to"   wrong  " John"

and at other lengths a seeded random token sequence whose corrupt twin differs at the middle
position (answer and wrong: the clean run's top two tokens). The exact sweep patches every
position, or with --exact-positions a seeded sample of them, its time then scaled to all
positions (said in the output); --exact-positions -1 skips it. With --steps k the estimate
along the path (`attribution_patch(steps=k)`) is timed too. It prints the Pearson correlation
of each estimate with the exact effects of the swept component, the time of one plain forward
+ backward of the corrupt prompt (to the sum of its last logits, parameters' gradients
included: a training step's backward), the peak resident memory of each phase and its rise
above the resident memory before it (sampled every 10 ms), and with --plot a scatter of
estimate against exact. Every phase is timed in wall and CPU seconds (this process's threads):
on cores shared with other work the wall time of the same call varies 2–3× from run to run,
and a ratio of CPU seconds varies less; with --threads 1 a thread never waits for another to be
scheduled, and the times repeat within ~10 %. Attribution runs --repeat times (the medians count).

    python benchmarks/bench_attribution.py [--family mamba] [--tokens 14] [--component h] [--exact-positions 0]
                                           [--steps 0] [--repeat 3] [--threads 2] [--plot FILE]

The first and last lines give /proc/loadavg: other work on the same cores inflates every time.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from bench_patching import CLEAN, CORRUPT, build

TOKENIZERS = Path(__file__).resolve().parents[1] / ".." / "shared" / "tokenizers"


def build_transformer(folder: Path, family: str, seed: int):
    """pythia-160m's or gpt2's shape with transformers' random init, saved with its real tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

    from compare import load_model

    torch.manual_seed(seed)
    if family == "pythia":
        model = GPTNeoXForCausalLM(GPTNeoXConfig(
            hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, vocab_size=50304,
            rotary_pct=0.25, use_parallel_residual=True, max_position_embeddings=2048, bos_token_id=0, eos_token_id=0))
        tokenizer = TOKENIZERS / "gpt-neox-20b"
    else:
        model = GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257))
        tokenizer = TOKENIZERS / "gpt2"
    if not tokenizer.is_dir():
        raise SystemExit(f"the real tokenizer is needed at {tokenizer} (see shared/tokenizers/README.md)")
    model.eval().save_pretrained(folder)
    for f in tokenizer.iterdir():
        shutil.copy(f, folder / f.name)
    return load_model(folder, device="cpu")


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


def rss() -> int:
    """Resident bytes of this process now."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def timed(out: dict):
    """out["s"], out["cpu"]: wall and CPU seconds of the block (CPU: this process's threads, less
    inflated than wall by other work on the cores); out["peak"]: its peak RSS above the RSS before it."""
    base, peak, done = rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.01)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    t, cpu = time.perf_counter(), time.process_time()
    try:
        yield out
    finally:
        out["s"], out["cpu"] = time.perf_counter() - t, time.process_time() - cpu
        done.set()
        watcher.join()
        out["peak"], out["base"] = max(peak[0], rss()), base


def forward_backward(handle, ids) -> None:
    """One plain forward + backward of the model on ids (to the sum of the last logits)."""
    with torch.enable_grad():
        out = handle.module(handle.as_input(handle.encode(ids) if isinstance(ids, str) else ids))
        (out if isinstance(out, torch.Tensor) else out.logits)[0, -1].sum().backward()
    handle.module.zero_grad(set_to_none=True)


def peak(out: dict) -> str:
    """The peak RSS of a phase, and how far it rose above the RSS before it."""
    return f"peak RSS {out['peak'] / 2**30:.2f} GiB ({(out['peak'] - out['base']) / 2**30:+.2f} GiB)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=("mamba", "pythia", "gpt2"), default="mamba")
    ap.add_argument("--tokens", type=int, default=14)
    ap.add_argument("--component", default=None,
                    help="the components of the exact sweep, comma-separated (default: the family's default component)")
    ap.add_argument("--exact-positions", type=int, default=0, help="positions the exact sweep patches (0: all; -1: none)")
    ap.add_argument("--from-change", action="store_true",
                    help="the exact sweep patches only the positions from the first changed token on (the others "
                         "are 0 in both by causality, checked for the estimates); Pearson is over those cells")
    ap.add_argument("--steps", type=int, default=0, help="also time attribution_patch(steps=STEPS) (0: not)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="attribution is timed this many times; the ratios use the median (the exact sweep runs once)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", type=Path, default=None, help="write estimate vs exact as a PNG here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("/proc/loadavg: " + Path("/proc/loadavg").read_text().strip())

    from compare import attribution_patch, patch_sweep
    from compare.figures.attribution import attribution_scatter, pair_up

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / f"{args.family}-random"
        handle = build(folder, args.seed) if args.family == "mamba" else build_transformer(folder, args.family, args.seed)
    components = (args.component or handle.arch.default_component).split(",")
    clean, corrupt, answer, wrong = pair(handle, args.tokens, args.seed)
    T, L = args.tokens, handle.n_layers
    kw = dict(model=handle, answer=answer, wrong=wrong)
    print(f"{args.family} at its real shape (random weights), {handle.arch.dims(handle.module.config)}; {T}-token "
          f"pair; {L} layers; {args.threads} threads; attribution of {', '.join(handle.arch.attribution)} "
          f"vs exact patch_sweep of {', '.join(components)}")

    forward_backward(handle, corrupt[:8] if isinstance(corrupt, list) else CORRUPT)  # warm-up
    floor, attr, path, exact = {}, {}, {}, {}
    with timed(floor):
        forward_backward(handle, corrupt)
    runs = []
    for _ in range(max(1, args.repeat)):
        with timed(attr):
            est = attribution_patch(clean, corrupt, **kw)
        runs.append(dict(attr))
    attr = dict(runs[0], peak=max(r["peak"] for r in runs),
                **{k: float(np.median([r[k] for r in runs])) for k in ("s", "cpu")})
    times = ", ".join(f"{r['s']:.2f}" for r in runs)
    print(f"one forward + backward: {floor['s']:.2f} s, {floor['cpu']:.2f} s CPU, {peak(floor)}")
    print(f"attribution: {attr['s']:.2f} s, {attr['cpu']:.2f} s CPU (medians of {times} s) for {len(est)} "
          f"estimates ({len(handle.arch.attribution)} components x {L} layers x {T} positions) = "
          f"{attr['s'] / floor['s']:.2f}x one forward + backward; {peak(attr)}")
    estimates = {"attribution": est}
    if args.steps:
        with timed(path):
            estimates[f"steps={args.steps}"] = attribution_patch(clean, corrupt, steps=args.steps, **kw)
        print(f"attribution, steps={args.steps}: {path['s']:.2f} s, {path['cpu']:.2f} s CPU = "
              f"{path['s'] / attr['s']:.2f}x steps=1, "
              f"{path['s'] / floor['s']:.2f}x one forward + backward; {peak(path)}")
    for component in components if args.exact_positions >= 0 else ():
        positions = None
        if args.from_change:
            a, b = (handle.encode(x) if isinstance(x, str) else x for x in (clean, corrupt))
            first = next(t for t in range(T) if a[t] != b[t])
            positions = list(range(first, T))
            before = [frame[(frame["component"] == component) & frame["position"].isin(range(first))]["estimate"]
                      for frame in estimates.values()]
            assert all((b == 0).all() for b in before), "an estimate before the first changed token is not 0"
        elif 0 < args.exact_positions < T:
            positions = sorted(np.random.default_rng(args.seed).choice(T, args.exact_positions, replace=False).tolist())
        with timed(exact):
            sweep = patch_sweep(clean, corrupt, component=component, positions=positions, **kw)
        scale = T / len(positions) if positions else 1
        scaled, scaled_cpu = exact["s"] * scale, exact["cpu"] * scale
        print(f"exact patch_sweep of {component!r}: {exact['s']:.2f} s, {exact['cpu']:.2f} s CPU for "
              f"{len(sweep)} patches"
              + (f", scaled to all {T} positions: {scaled:.2f} s, {scaled_cpu:.2f} s CPU" if positions else "")
              + f"; ratio exact / attribution: {scaled / attr['s']:.1f}x wall, {scaled_cpu / attr['cpu']:.1f}x CPU")
        for label, frame in estimates.items():
            change, estimate, _ = pair_up(frame, sweep, handle.name)
            r = np.corrcoef(change, estimate)[0, 1]
            where = f"positions {positions[0]}..{positions[-1]}" if args.from_change else "all positions"
            print(f"Pearson({label}, exact change) over {len(change)} (layer, position) cells of {component!r} "
                  f"({where}): {r:.4f}")
            if args.plot is not None:
                path = args.plot.with_name(f"{args.plot.stem}-{component}-{label.replace('=', '')}{args.plot.suffix}")
                attribution_scatter(frame, sweep).savefig(path, dpi=120)
                print(f"plot: {path}")
    print("/proc/loadavg: " + Path("/proc/loadavg").read_text().strip())


if __name__ == "__main__":
    main()
