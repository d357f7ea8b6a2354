"""Forward time of the interpretable Mamba-2 vs transformers' CPU path at mamba2-130m's shape.

Random weights (`mamba.init_random_`'s scale) in transformers' `Mamba2ForCausalLM` (d_model 768,
24 layers, d_state 128, headdim 64, expand 2, ngroups 1, vocabulary 50,288 rows), the same
weights loaded into ours (`Mamba2LM`), and our Mamba-1 (`MambaLM`, mamba-130m's shape, d_model
768) beside them; fp32, CPU, full logits, best of `--repeats`, all measured in one run so the
ratios share the machine's load. Also checks that our logits equal transformers' (max |ΔL|).

With --noise, also the batched noise sweep on `h` (over --noise-layers × --noise-levels, the
14-token IOI prompt in the real GPT-NeoX tokenizer, target its clean top-1) against one nnsight
trace per run (`noise_ref.traced_run`) on a seeded sample of --noise-sample runs, per-run time
ratio; the sampled naive runs are checked against the sweep's rows.

    python benchmarks/bench_mamba2.py [--lengths 1024] [--repeats 3] [--noise] [--noise-layers 0 8 16]
"""
from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
import torch

PROMPT = "When Mary and John went to the store, John gave a drink to"
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


def noise_against_traces(ours, args) -> None:
    from compare import load_tokenizer, noise_sweep
    from compare.handle.model import Model
    from compare.analyses.noise import prepare
    from compare.analyses.noise_ref import traced_run

    tok = load_tokenizer(TOKENIZER)
    handle = Model("mamba2-130m-random", "mamba2", ours, tok, len(tok), None)
    target = int(handle.logits(handle.encode(PROMPT))[0, -1].argmax())
    levels = np.linspace(0, 10, args.noise_levels)
    kw = dict(model=handle, target=target, component="h", layers=args.noise_layers, levels=levels)
    t = time.perf_counter()
    fast = noise_sweep(PROMPT, **kw)
    t_fast = (time.perf_counter() - t) / len(fast)
    sweep = prepare(PROMPT, **kw)
    sample = random.Random(0).sample([(layer, i) for layer in sweep.layers for i in range(len(sweep.runs))],
                                     args.noise_sample)
    t = time.perf_counter()
    worst = 0.0
    for layer, i in sample:
        logits = traced_run(sweep, layer, *sweep.runs[i])
        p = torch.softmax(logits, -1)[target].item()
        row = fast[(fast["layer"] == layer)].iloc[i]
        worst = max(worst, abs(p - row["p_target"]))
    t_naive = (time.perf_counter() - t) / len(sample)
    print(f"noise on h, {len(args.noise_layers)} layers x {args.noise_levels} levels: sweep {t_fast * 1e3:.0f} ms/run, "
          f"one trace per run {t_naive * 1e3:.0f} ms/run (sample of {len(sample)}): x{t_naive / t_fast:.1f}; "
          f"max |Δp_target| of the sampled runs {worst:.1e}")


@torch.no_grad()
def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="*", default=[1024], help="none: skip the forward timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--noise", action="store_true", help="also the noise sweep on h vs one trace per run")
    parser.add_argument("--noise-layers", type=int, nargs="+", default=[0, 8, 16])
    parser.add_argument("--noise-levels", type=int, default=20)
    parser.add_argument("--noise-sample", type=int, default=8)
    args = parser.parse_args()
    ref = build_transformers()
    ours, mamba1 = build_ours(ref), build_mamba1()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for T in args.lengths:
        ids = torch.randint(0, 50277, (1, T), generator=torch.Generator().manual_seed(T))
        t_ref = best_time(lambda: ref(ids).logits, args.repeats)
        error = (ours(ids) - ref(ids).logits).abs().max().item()
        t_m1 = best_time(lambda: mamba1(ids), args.repeats)
        t_ours = best_time(lambda: ours(ids), args.repeats)
        print(f"T={T}: ours {t_ours:.3f} s, transformers {t_ref:.3f} s (×{t_ref / t_ours:.2f} faster), "
              f"our Mamba-1 at d_model 768 {t_m1:.3f} s; max |ΔL| vs transformers {error:.2e}")
    if args.noise:
        noise_against_traces(ours, args)

if __name__ == "__main__":
    main()
