"""`build_app()`: the Blocks of the whole front end, one tab per view.

Models are not loaded here: `python -m ui` checks them before serving (and passes what it found
as `statuses`, shown as a banner when one is missing); otherwise the first callback that needs
one loads it into the process-wide cache (`ui.models`). The latest comparison of a session lives
in a `gr.State`, so the Distributions tab reads what the Compare tab computed.

Events that run a model queue in two concurrency groups, each running at most `heavy_limit` at
once across all tabs and users: `HEAVY`, the long jobs (noise sweeps, channel ranking, patching,
datasets, the report), and `SHORT`, the one-forward jobs (Compare, Distributions, Patterns, Lens,
Tokenizers). So a short job never waits behind a long one for its whole length: both run, and the
model's lock (`compare.handle.isolation`) keeps them apart, the short one waiting at most for the block
of forwards the long one is in (sweeps take the lock per block). Gradio shows a waiting job's
place in its group's queue on the page; Stop takes a waiting job out (`ui.jobs`).
"""
from __future__ import annotations

from .anyio_compat import define_anyio_attributes

define_anyio_attributes()  # before the server imports anyio's typed attributes (see the module)

import gradio as gr  # noqa: E402

from . import (models, tab_compare, tab_datasets, tab_distributions, tab_lens, tab_noise, tab_patching,  # noqa: E402
               tab_patterns, tab_report, tab_tokenizers)

CONCURRENCY = 2
"""Events run at once outside the heavy group (tokenising, redrawing a plot, Stop)."""
HEAVY = "heavy"
SHORT = "short"
HEAVY_LIMIT = 1
"""Model-running events at once in each group (`HEAVY`, `SHORT`), all tabs and sessions together."""
QUEUE_SIZE = 32

METHOD = """\
**Method.** Mamba: Gu & Dao, *Mamba: Linear-Time Sequence Modeling with Selective State Spaces*
([arXiv 2312.00752](https://arxiv.org/abs/2312.00752)); GPT-2 small is the transformer baseline.
The natural prompt is the indirect-object-identification (IOI) task of Wang et al.,
*Interpretability in the Wild* ([arXiv 2211.00593](https://arxiv.org/abs/2211.00593)).
**L** are the logits at a position; **K = L ÷ |mean(L)|**, each logit divided by the absolute mean
of its row over the vocabulary, so rows of different scale compare; **P = softmax(L)**.
Noise: `level · ε` (× the component's RMS on the relative scale) is added at one layer; *hit* means
the last position's argmax is still the target. The critical level is the midpoint of a logistic
fit of hit against level ([logistic regression](https://en.wikipedia.org/wiki/Logistic_regression)),
with a bootstrap confidence interval over trials.
"""


def build_app(*, concurrency: int = CONCURRENCY, heavy_limit: int = HEAVY_LIMIT,
              statuses: list[models.Status] | None = None) -> gr.Blocks:
    # always_last: a click while the tab's previous run winds down (just after Stop) runs after it,
    # where Gradio's default ("once") drops it (`ui.jobs`)
    heavy = {"concurrency_id": HEAVY, "concurrency_limit": heavy_limit, "trigger_mode": "always_last"}
    short = {**heavy, "concurrency_id": SHORT}
    with gr.Blocks(title="Mamba vs GPT-2", analytics_enabled=False) as demo:
        gr.Markdown("# Mamba vs GPT-2, side by side\n"
                    f"Models: Mamba `{models.source('mamba')}`, GPT-2 `{models.source('gpt2')}` "
                    "(set with `--mamba/--gpt2` or MAMBA_MODEL/GPT2_MODEL). "
                    "L = logits, K = logits ÷ |row mean of L|, P = probabilities.")
        problems = models.banner(statuses or [])
        gr.Markdown(problems, visible=bool(problems), elem_id="startup-banner")
        with gr.Accordion("Method", open=False, elem_id="method"):
            gr.Markdown(METHOD)
        comparison = gr.State(None)
        with gr.Tabs():
            inputs = tab_compare.build(comparison, short)
            tab_distributions.build(comparison, inputs, short)
            tab_patterns.build(short)
            tab_lens.build(short)
            tab_noise.build(heavy)
            tab_patching.build(heavy)
            tab_tokenizers.build(short)
            tab_datasets.build(heavy)
            tab_report.build(heavy)
    return demo.queue(default_concurrency_limit=concurrency, max_size=QUEUE_SIZE)
