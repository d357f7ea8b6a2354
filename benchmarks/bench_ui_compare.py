"""Benchmark: a click of the app's Compare against the API call it wraps, in one run.

The click is the tab's callback (`ui.tab_compare.run`, streamed to its end) plus what Gradio does
with its outputs before sending them (`gr.Plot.postprocess`: each matplotlib figure to a PNG);
the API is `compare.compare` on the same models, prompt, variant and tracked tokens. Both run
in this process on the tiny random pair the tests use (tests/conftest.py: 2-layer Mamba and
GPT-2 over a 72-token vocabulary), after one warm-up of each; medians of `--repeats`.

    python benchmarks/bench_ui_compare.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's packages, not an installed copy

PROMPT = "When Mary and John went to the store, John gave a drink to"
TRACK = " Mary| John"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    import gradio as gr

    from compare import compare
    from conftest import build_gpt2, build_mamba_hf
    from ui import models, tab_compare

    root = Path(tempfile.mkdtemp(prefix="bench-ui-compare-"))
    build_gpt2(root / "gpt2")
    build_mamba_hf(root / "mamba")
    models.configure(mamba=str(root / "mamba"), gpt2=str(root / "gpt2"))
    plot = gr.Plot()

    def api():
        compare(PROMPT, models.pair(), variant="aligned", track=tab_compare.tracked_tokens(TRACK), progress=False)

    def click():
        *_, outputs = tab_compare.run(PROMPT, "aligned", TRACK)
        for figure in outputs[1:3]:
            if figure is not None:
                plot.postprocess(figure)

    timings = {"api": [], "click": []}
    for _ in range(args.repeats + 1):  # the first round warms both up (loading, first draw)
        for name, fn in (("api", api), ("click", click)):
            start = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - start)
    api_s, click_s = (statistics.median(timings[k][1:]) for k in ("api", "click"))
    print(f"tiny pair, {args.repeats} repeats (medians): API {api_s:.3f} s, Compare click {click_s:.3f} s, "
          f"ratio {click_s / api_s:.2f}x")


if __name__ == "__main__":
    main()
