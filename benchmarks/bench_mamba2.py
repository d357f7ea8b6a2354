"""Forward time of the interpretable Mamba-2 vs transformers' CPU path at mamba2-130m's shape.

Random weights (`mamba.init_random_`'s scale) in transformers' `Mamba2ForCausalLM` (d_model 768,
24 layers, d_state 128, headdim 64, expand 2, ngroups 1, vocabulary 50,288 rows), the same
weights loaded into ours (`Mamba2LM`), and our Mamba-1 (`MambaLM`, mamba-130m's shape, d_model
768) beside them; fp32, CPU, full logits, best of `--repeats`, all measured in one run so the
ratios share the machine's load. Also checks that our logits equal transformers' (max |ΔL|).

With --sweeps, also (a) the noise sweep on `h` (24 layers × 100 levels in [0, 10], the 14-token
IOI prompt in the real GPT-NeoX tokenizer, target its clean top-1) against one nnsight trace per
run (`noise_ref.traced_run`), and (b) `patch_sweep` of `h` over 24 layers × 14 positions of the
IOI pair against one trace per patch (`patching_ref.traced_patch`). The sweeps are timed whole;
the naive loops on a seeded sample of --sample runs (patches), half before and half after the
sweep, scaled to the sweep's size; the sampled runs are checked against the sweep's rows. The
load average is printed with every line (other work shares the machine).

    python benchmarks/bench_mamba2.py [--lengths 1024] [--repeats 3] [--sweeps] [--noise-layers 0 8 16]
"""
from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

PROMPT = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
TOKENIZER = Path(__file__).resolve().parents[1] / ".." / "shared" / "tokenizers" / "gpt-neox-20b"
SHAPE = dict(d_model=768, n_layer=24, vocab_size=50288, d_state=128, headdim=64, expand=2, ngroups=1)


def build_transformers():
    from transformers import Mamba2Config, Mamba2ForCausalLM

    from compare.ssm.mamba import init_random_

    torch.manual_seed(0)
    cfg = Mamba2Config(hidden_size=SHAPE["d_model"], num_hidden_layers=SHAPE["n_layer"], vocab_size=SHAPE["vocab_size"],
                       state_size=SHAPE["d_state"], head_dim=SHAPE["headdim"], expand=SHAPE["expand"],
                       n_groups=SHAPE["ngroups"], num_heads=SHAPE["expand"] * SHAPE["d_model"] // SHAPE["headdim"],
                       tie_word_embeddings=True)
    return init_random_(Mamba2ForCausalLM(cfg).eval(), seed=0, n_layer=SHAPE["n_layer"])


def build_ours(ref):
    from compare.ssm.mamba2 import Mamba2Config, Mamba2LM

    model = Mamba2LM(Mamba2Config(**SHAPE)).eval()
    model.load_checkpoint(ref.state_dict())
    return model


def build_mamba1():
    from compare.ssm.mamba import MambaConfig, MambaLM, init_random_

    torch.manual_seed(0)
    model = MambaLM(MambaConfig(d_model=768, n_layer=24, vocab_size=50280, d_state=16)).eval()
    return init_random_(model, seed=0, n_layer=24)


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, kernels
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def load() -> str:
    return "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())


def random_handle(ours):
    from compare import load_tokenizer
    from compare.handle.model import Model

    tok = load_tokenizer(TOKENIZER)
    return Model("mamba2-130m-random", "mamba2", ours, tok, len(tok), None)


def noise_against_traces(handle, args) -> None:
    """The noise sweep on h against one nnsight trace per run, the naive runs a seeded sample
    timed half before and half after the sweep (so both see the same load), scaled per run."""
    from compare import noise_sweep
    from compare.analyses.noise import prepare
    from compare.analyses.noise_ref import traced_run

    target = int(handle.logits(handle.encode(PROMPT))[0, -1].argmax())
    kw = dict(model=handle, target=target, component="h", layers=args.noise_layers,
              levels=np.linspace(0, 10, args.noise_levels))
    sweep = prepare(PROMPT, **kw)
    sample = random.Random(0).sample([(layer, i) for layer in sweep.layers for i in range(len(sweep.runs))],
                                     args.sample)
    half = len(sample) // 2

    def naive(part):
        t = time.perf_counter()
        probs = [torch.softmax(traced_run(sweep, layer, *sweep.runs[i]), -1)[target].item() for layer, i in part]
        return time.perf_counter() - t, probs

    t_before, p_before = naive(sample[:half])
    t = time.perf_counter()
    fast = noise_sweep(PROMPT, **kw)
    t_fast = time.perf_counter() - t
    t_after, p_after = naive(sample[half:])
    t_naive = (t_before + t_after) / len(sample)
    worst = max(abs(p - fast[fast["layer"] == layer].iloc[i]["p_target"])
                for (layer, i), p in zip(sample, p_before + p_after))
    print(f"noise on h, {len(sweep.layers)} layers x {args.noise_levels} levels = {len(fast)} runs: sweep {t_fast:.1f} s "
          f"({t_fast / len(fast) * 1e3:.0f} ms/run); one trace per run {t_naive * 1e3:.0f} ms/run, timed on a sample "
          f"of {len(sample)} runs and scaled to {len(fast)} runs: {t_naive * len(fast):.0f} s, x{t_naive * len(fast) / t_fast:.1f}; "
          f"max |Δp_target| of the sampled runs {worst:.1e} ({load()})")


def patching_against_traces(handle, args) -> None:
    """patch_sweep of h over every layer x position of the IOI pair against one nnsight trace per
    patch (`patching_ref.traced_patch`, its clean trace counted), sampled and scaled likewise."""
    from compare import patch_sweep
    from compare.analyses.patching import metric_of, prepare
    from compare.analyses.patching_ref import clean_values, traced_patch

    kw = dict(model=handle, component="h", answer=" Mary", wrong=" John")
    sweep = prepare(PROMPT, CORRUPT, **kw)[0]
    pairs = [(layer, i) for layer in sweep.layers for i in range(len(sweep.patches))]
    sample = random.Random(1).sample(pairs, args.sample)
    half = len(sample) // 2

    def naive(part):
        t = time.perf_counter()
        src = clean_values(sweep)
        logits = [traced_patch(sweep, layer, src[layer], sweep.patches[i]) for layer, i in part]
        return time.perf_counter() - t, logits

    t_before, l_before = naive(sample[:half])
    t = time.perf_counter()
    fast = patch_sweep(PROMPT, CORRUPT, **kw)
    t_fast = time.perf_counter() - t
    t_after, l_after = naive(sample[half:])
    t_naive = (t_before + t_after) / len(sample) * len(pairs)
    rows = fast.set_index(["layer", "position"])["metric_patched"]
    worst = max(abs(metric_of(lg[None], sweep.metric, sweep.answer, sweep.wrong)[0] - rows[(layer, sweep.labels[i])])
                for (layer, i), lg in zip(sample, l_before + l_after))
    print(f"patch_sweep of h, {len(sweep.layers)} layers x {len(sweep.patches)} positions = {len(pairs)} patches: "
          f"sweep {t_fast:.1f} s; one trace per patch timed on a sample of {len(sample)} and scaled: {t_naive:.0f} s, "
          f"x{t_naive / t_fast:.1f}; max |Δ logit_diff| of the sampled patches {worst:.1e} ({load()})")


@torch.no_grad()
def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="*", default=[1024], help="none: skip the forward timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweeps", action="store_true",
                        help="also the noise sweep and patch_sweep on h vs one nnsight trace per run / patch")
    parser.add_argument("--noise-layers", type=int, nargs="+", default=None, help="default: all 24")
    parser.add_argument("--noise-levels", type=int, default=100)
    parser.add_argument("--sample", type=int, default=8, help="naive runs (and patches) timed, then scaled")
    args = parser.parse_args()
    ref = build_transformers()
    ours, mamba1 = build_ours(ref), build_mamba1()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {load()} (other work on the machine)")
    for T in args.lengths:
        ids = torch.randint(0, 50277, (1, T), generator=torch.Generator().manual_seed(T))
        t_ref = best_time(lambda: ref(ids).logits, args.repeats)
        error = (ours(ids) - ref(ids).logits).abs().max().item()
        t_m1 = best_time(lambda: mamba1(ids), args.repeats)
        t_ours = best_time(lambda: ours(ids), args.repeats)
        print(f"T={T}: ours {t_ours:.3f} s, transformers {t_ref:.3f} s (×{t_ref / t_ours:.2f} faster), "
              f"our Mamba-1 at d_model 768 {t_m1:.3f} s; max |ΔL| vs transformers {error:.2e}")
    if args.sweeps:
        handle = random_handle(ours)
        patching_against_traces(handle, args)
        noise_against_traces(handle, args)

if __name__ == "__main__":
    main()
