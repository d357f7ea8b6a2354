"""Benchmark: the full (non-quick) reproduction report on random-weight models of the real shapes.

Mamba-130m's shape (d_model 768, 24 layers, 50,280 rows) and GPT-2 small (12 layers, 50,257 rows),
transformers' own random init, saved to a temp folder with the real tokenizers from
../shared/tokenizers (as bench_study.py does) and loaded back through the public loader. Target:
the whole report at the thesis's sizes in ≤ 15 min on 2 CPU cores.

The machine may be shared, so beside the wall time the script prints the process's CPU time and
/proc/loadavg before and after, and each section's wall and CPU time: a wall time measured under a
load above the core count overstates what the report costs on a quiet machine, where the CPU time
over the 2 cores estimates it (from below: torch does not keep both cores busy everywhere).

    python benchmarks/bench_reproduce.py [--quick] [--threads 2] [--keep DIR]
"""
from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from bench_study import TOKENIZERS, save_models  # noqa: E402


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="the quick plan instead of the full one")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2: the target machine's cores)")
    ap.add_argument("--keep", default=None, metavar="DIR", help="write the report here instead of a temp folder")
    args = ap.parse_args()
    if not TOKENIZERS.is_dir():
        raise SystemExit(f"needs the real tokenizers in {TOKENIZERS}")
    import torch

    import compare.reproduce  # noqa: F401 — the package (whose SECTIONS are timed below)
    from compare import load_model

    package = sys.modules["compare.reproduce"]
    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="bench_reproduce-"))
    try:
        mamba_dir, gpt2_dir = save_models(workdir)
        models = (load_model(mamba_dir, device="cpu"), load_model(gpt2_dir, device="cpu"))
        timings = []

        def timed(fn):
            def run(ctx):
                start, cpu = time.perf_counter(), cpu_seconds()
                result = fn(ctx)
                timings.append((fn.__name__, time.perf_counter() - start))
                print(f"  {fn.__name__:<16} {timings[-1][1]:7.1f} s  CPU {cpu_seconds() - cpu:7.1f} s  "
                      f"(loadavg {loadavg()})", flush=True)
                return result
            return run

        package.SECTIONS = tuple(timed(fn) for fn in package.SECTIONS)
        out = Path(args.keep) if args.keep else workdir / "report"
        print(f"loadavg before: {loadavg()}  torch threads: {torch.get_num_threads()}", flush=True)
        start, cpu = time.perf_counter(), cpu_seconds()
        package.thesis_report(out, models=models, quick=args.quick, seed=0, overwrite=bool(args.keep))
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        print(f"loadavg after:  {loadavg()}")
        print(f"  {'writing':<16} {wall - sum(s for _, s in timings):7.1f} s (figures rendered, files written)")
        plan = "quick" if args.quick else "full"
        print(f"{plan} report: wall {wall:.1f} s ({wall / 60:.1f} min), process CPU {cpu:.1f} s, "
              f"report {sum(f.stat().st_size for f in out.rglob('*') if f.is_file()) / 2**20:.1f} MiB, "
              f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")  # ru_maxrss: KiB
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
