"""Benchmark: one study on the embedded executor and on a local Ray instance, and Ray's per-task overhead.

The study: PROMPTS IOI-style prompts × 2 random-weight models at the real shapes (Mamba-130m:
d_model 768, 24 layers, 50,280 rows; GPT-2 small: 12 layers, 50,257 rows; transformers' own
random init, saved to a temp folder with the real tokenizers from ../shared/tokenizers) ×
(compare + a sweep of noise on resid_post over every layer × LEVELS levels, 1 trial): 3 tasks
per prompt. Both executors run every task on one torch thread (the study default, which makes
their rows identical; the benchmark checks that they are). On this machine's 2 cores Ray runs
2 actors at once, so its wall time shows its overhead against twice the workers, not a cluster's
speed-up.

Ray's per-task overhead is measured apart, on tasks that compute almost nothing (compare of a
3-token prompt on the tiny models of tests/conftest.py): one actor, steady state (wall time after
the first result, per task) minus the embedded executor's wall time per task for the same work.

    python benchmarks/bench_study.py [--prompts 20] [--levels 20] [--skip-embedded]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TOKENIZERS = ROOT / ".." / "shared" / "tokenizers"
NAMES = ["Mary", "John", "Anna", "Paul", "Lisa", "Mark", "Sara", "Tom", "Emma", "David"]
PLACES = ["store", "park", "office", "school", "station"]


def prompts(n: int) -> list[str]:
    return [f"When {NAMES[i % 10]} and {NAMES[(i + 3) % 10]} went to the {PLACES[i % 5]}, "
            f"{NAMES[(i + 3) % 10]} gave a drink to" for i in range(n)]


def save_models(folder: Path) -> tuple[Path, Path]:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, MambaConfig, MambaForCausalLM

    torch.manual_seed(0)
    mamba, gpt2 = folder / "mamba-130m-random", folder / "gpt2-random"
    MambaForCausalLM(MambaConfig(hidden_size=768, num_hidden_layers=24, vocab_size=50280, state_size=16,
                                 expand=2, conv_kernel=4)).save_pretrained(mamba)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(gpt2)
    for model, tok in ((mamba, "gpt-neox-20b"), (gpt2, "gpt2")):
        for f in (TOKENIZERS / tok).iterdir():
            shutil.copy(f, model / f.name)
    return mamba, gpt2


def timed_study(spec, out, **kwargs):
    from compare import study

    seen = []
    start = time.perf_counter()
    summary = study.run(spec, out, progress=False, callback=lambda p: seen.append(time.perf_counter() - start), **kwargs)
    wall = time.perf_counter() - start
    assert not summary.failed, summary.failed
    return wall, seen


def overhead(workdir: Path, n: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import build_gpt2

    import ray

    build_gpt2(workdir / "tiny-gpt2")
    spec = {"prompts": [f"the cat {i % 3}" for i in range(n)], "models": [str(workdir / "tiny-gpt2")],
            "analyses": ["compare"], "device": "cpu"}
    wall_e, seen_e = timed_study(spec, workdir / "tiny-embedded")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        wall_r, seen_r = timed_study(spec, workdir / "tiny-ray", executor="ray", workers=1)
    finally:
        ray.shutdown()
    per_e = (seen_e[-1] - seen_e[0]) / (n - 1)
    per_r = (seen_r[-1] - seen_r[0]) / (n - 1)
    print(f"per-task overhead ({n} near-empty tasks, 1 actor, steady state): embedded {per_e * 1e3:.1f} ms/task, "
          f"Ray {per_r * 1e3:.1f} ms/task -> Ray adds {(per_r - per_e) * 1e3:.1f} ms per task; "
          f"Ray's start (actor, imports, model load) before the first result: {seen_r[0]:.1f} s "
          f"(embedded: {seen_e[0]:.1f} s)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--levels", type=int, default=20)
    ap.add_argument("--overhead-tasks", type=int, default=40)
    ap.add_argument("--skip-embedded", action="store_true")
    args = ap.parse_args()
    if not TOKENIZERS.is_dir():
        raise SystemExit(f"needs the real tokenizers in {TOKENIZERS}")
    import ray

    from compare import study

    workdir = Path(tempfile.mkdtemp(prefix="bench_study-"))
    try:
        overhead(workdir, args.overhead_tasks)
        mamba, gpt2 = save_models(workdir)
        spec = {"prompts": prompts(args.prompts), "models": [str(mamba), str(gpt2)], "seed": 0, "device": "cpu",
                "analyses": [{"analysis": "compare", "track": [" Mary"]},
                             {"analysis": "noise_sweep", "component": "resid_post", "target": " Mary",
                              "levels": [i / (args.levels - 1) for i in range(args.levels)], "trials": 1}]}
        n_tasks = len(study.split(study.from_mapping(spec)))
        print(f"study: {args.prompts} prompts x 2 models x (compare + all layers x {args.levels} levels sweep) "
              f"= {n_tasks} tasks, 1 torch thread per task")
        if not args.skip_embedded:
            wall_e, _ = timed_study(spec, workdir / "embedded")
            print(f"embedded: {wall_e:.1f} s ({wall_e / n_tasks:.2f} s/task)")
        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        init = time.perf_counter() - start
        try:
            wall_r, seen = timed_study(spec, workdir / "ray", executor="ray")
        finally:
            ray.shutdown()
        print(f"ray (2 actors x 1 thread): {wall_r:.1f} s ({wall_r / n_tasks:.2f} s/task), plus ray.init {init:.1f} s; "
              f"first result after {seen[0]:.1f} s")
        if not args.skip_embedded:
            print(f"ratio embedded / ray: {wall_e / wall_r:.2f}")
            for label in ("compare", "noise_sweep"):
                pd.testing.assert_frame_equal(study.read(workdir / "embedded", label), study.read(workdir / "ray", label),
                                              check_exact=True)
            print("rows identical across executors: yes")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
