"""Benchmark: a click of the app's Compare against the API call it wraps, on both pairs, in one run.

The click is the tab's callback (`ui.tab_compare.run`, streamed to its end) plus what Gradio does
with its outputs before sending them (`gr.Plot.postprocess`: the figures are Vega-Lite specs the
page draws, sent as they are; a matplotlib figure would be encoded to an image here); the API is
`compare.compare` on the same models, prompt, variant and tracked tokens, called in this thread.
The click runs `compare` in a worker thread (`ui.jobs.run`), and on this machine torch's forward
passes ran faster there than in the main thread (0.05 vs 0.08-0.2 s on the tiny pair), so the API
is also timed in a worker thread ("API in a thread") and the click's ratio to it is printed too.
All run in this process, after one warm-up of each, on two pairs in turn:
    tiny  the random pair the tests use (tests/conftest.py: 2-layer Mamba and GPT-2 over a
          72-token vocabulary);
    real  random weights at the real shapes (Mamba-130m: d_model 768, 24 layers, 50,280 rows;
          GPT-2 small: 12 layers, 50,257 rows) with the real tokenizers from ../shared/tokenizers,
          built as bench_reproduce.py and bench_study.py build them.
Medians of `--repeats`, wall and process CPU time (all threads). The app releases memory 2 s after
a job (`ui.jobs.schedule_release`); the benchmark waits for that release after each click, untimed,
so that it does not land in the next API call. The machine may be shared, so /proc/loadavg is
printed before and after each pair: a wall time under a load above the core count mostly measures
the other processes, the CPU time much less so.

    python benchmarks/bench_ui_compare.py [--repeats 7] [--pairs tiny real]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# this checkout's packages (not an installed copy), the tests' tiny models, bench_study's real shapes
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

PROMPT = "When Mary and John went to the store, John gave a drink to"
TRACK = " Mary| John"
PAIRS = ("tiny", "real")


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def build(pair: str, folder: Path) -> tuple[Path, Path]:
    """The (mamba, gpt2) folders of `pair`, written under `folder`."""
    if pair == "tiny":
        from conftest import build_gpt2, build_mamba_hf

        build_gpt2(folder / "gpt2")
        build_mamba_hf(folder / "mamba")
        return folder / "mamba", folder / "gpt2"
    from bench_study import TOKENIZERS, save_models

    if not TOKENIZERS.is_dir():
        raise SystemExit(f"the real pair needs the real tokenizers in {TOKENIZERS}")
    return save_models(folder)


def measure(repeats: int) -> dict[str, tuple[float, float]]:
    """{"api", "api_thread", "click"}: median (wall, CPU) seconds on the configured pair, alternating,
    after one warm-up round."""
    import gradio as gr

    from compare import compare
    from ui import jobs, models, tab_compare

    plot = gr.Plot()

    def api():
        compare(PROMPT, models.pair(), variant="aligned", track=tab_compare.tracked_tokens(TRACK), progress=False)

    def api_thread():  # the API where the click runs it: in a worker thread
        worker = threading.Thread(target=api)
        worker.start()
        worker.join()

    def click():
        *_, outputs = tab_compare.run(PROMPT, "aligned", TRACK)
        for figure in outputs[1:3]:
            if figure is not None:
                plot.postprocess(figure)

    def settle():  # the click's delayed memory release, run now and untimed
        timer = jobs._release_timer
        if timer is not None:
            timer.join()

    timings = {"api": [], "api_thread": [], "click": []}
    for _ in range(repeats + 1):  # the first round warms them up (loading, first draw)
        for name, fn in (("api", api), ("api_thread", api_thread), ("click", click)):
            start, cpu = time.perf_counter(), time.process_time()
            fn()
            timings[name].append((time.perf_counter() - start, time.process_time() - cpu))
            settle()
    return {name: tuple(statistics.median(t[i] for t in runs[1:]) for i in (0, 1)) for name, runs in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--pairs", nargs="+", choices=PAIRS, default=list(PAIRS))
    args = parser.parse_args()

    from ui import models

    root = Path(tempfile.mkdtemp(prefix="bench-ui-compare-"))
    try:
        for pair in args.pairs:
            mamba, gpt2 = build(pair, root / pair)
            models.configure(mamba=str(mamba), gpt2=str(gpt2))
            before = loadavg()
            t = measure(args.repeats)
            (api_s, api_cpu), (thread_s, thread_cpu), (click_s, click_cpu) = t["api"], t["api_thread"], t["click"]
            print(f"{pair} pair, {args.repeats} repeats (medians): wall API {api_s:.3f} s, Compare click {click_s:.3f} s, "
                  f"ratio {click_s / api_s:.2f}x; CPU API {api_cpu:.3f} s, click {click_cpu:.3f} s, ratio "
                  f"{click_cpu / api_cpu:.2f}x; API in a thread: wall {thread_s:.3f} s (click {click_s / thread_s:.2f}x), "
                  f"CPU {thread_cpu:.3f} s (click {click_cpu / thread_cpu:.2f}x)  "
                  f"(loadavg before {before}, after {loadavg()})", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
