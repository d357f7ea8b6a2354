"""Section 5: periodic ID inputs (Figs. 18–21, hypotheses 2–3, Conclusion 7).

Each cycle of the thesis, repeated to `Plan.periodic_length` tokens, runs three ways: the first
model on the IDs (Fig. 19), the second on the same IDs (Fig. 20: other text; it tracks the ID it
is fed) and the second on the aligned IDs (Fig. 21: the same text).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import figures, metrics
from ..comparison import Run
from .context import Context
from .plan import CYCLES
from .report import Section
from .uncertainty import EXACT


def p_next(run: Run) -> np.ndarray:
    """[T] P of the token that continues the run's own pattern after each position."""
    p = metrics.period(run.ids)
    expected = metrics.continuation(run.ids, p)
    return run.probs[np.arange(len(run.ids)), expected]


def merged_predictions(run: Run) -> list[str]:
    """Predictions whose text is two consecutive tokens of the run's cycle written as one token
    (" Mon" + "])," → " Mon]),"): the merging of Conclusion 7."""
    p = metrics.period(run.ids)
    cycle = run.tokens[:p]
    joined = {cycle[k] + cycle[(k + 1) % p] for k in range(p)}
    return [text for text in run.predictions if text in joined]


def periodic(ctx: Context) -> Section:
    s = Section(5, "periodic", "Periodic inputs", "Figs. 18–21, hypotheses 2–3, Conclusion 7")
    first, second = ctx.names
    s.notes.append(f"Each cycle is repeated to {ctx.plan.periodic_length} tokens (the thesis does not state its "
                   "length; it mentions T = 50).")
    for cycle in CYCLES:
        ids, reduced = ctx.cycle_ids(cycle)
        if reduced:
            s.notes.append(f"Cycle {list(cycle)} lies outside {first}'s vocabulary of {ctx.mamba.vocab_size}; "
                           f"it is run as {ids} instead (not the thesis's input).")
        same, aligned = ctx.periodic(cycle, "same_ids"), ctx.periodic(cycle, "aligned")
        views = {first: same.runs[first], f"{second} (same IDs)": same.runs[second],
                 f"{second} (aligned IDs)": aligned.runs[second]}
        lock, merged, tracked = [], [], []
        for label, run in views.items():
            lock.append(s.add(f"lock_in[{cycle}|{label}]", f"lock-in, {label}", run.lock_in,
                              "first position from which every prediction continues the pattern (—: never)",
                              n=len(run.ids), uncertainty=EXACT,
                              ids=run.ids[: metrics.period(run.ids)].tolist(), length=len(run.ids)))
            found = merged_predictions(run)
            merged.append(s.add(f"merged[{cycle}|{label}]", f"merged predictions, {label}", len(found),
                                "positions whose prediction is two consecutive cycle tokens written as one token",
                                n=len(run.ids), uncertainty=EXACT,
                                examples=sorted(set(found))[:3]))
            tr = next(iter(run.tracked.values()))
            tracked.append(s.add(f"tracked[{cycle}|{label}]", f"tracked ID, {label}", f"{tr.id} = {tr.token!r}",
                                 "the tracked ID and this model's text of it (under same IDs: the ID it is fed)",
                                 n=1, uncertainty=EXACT))
        order = [run.lock_in for run in views.values()]
        s.row(f"cycle {list(cycle)}: lock-in", "both learn to repeat the cycle; GPT-2 locks in more slowly than "
              "Mamba (against hypothesis 3)", lock, verdict=_lock_verdict(order, first, second))
        s.row(f"cycle {list(cycle)}: merging", "the models may predict two cycle tokens merged into one", merged)
        s.row(f"cycle {list(cycle)}: tracked token", "Fig. 20 feeds GPT-2 the same IDs (other text)", tracked)
        frame = pd.concat([pd.DataFrame({"model": label, "position": np.arange(len(run.ids)), "token": run.tokens,
                                         "P_next": p_next(run)}) for label, run in views.items()], ignore_index=True)
        stem = "_".join(map(str, cycle))
        s.figure(stem, figures.pattern_lock_in(frame, {label: run.lock_in for label, run in views.items()}),
                 f"Cycle {list(cycle)}: P of the next pattern token per position, lock-in dashed.")
        s.frames[f"p_next_{stem}"] = frame
    return s


def _lock_verdict(order: list[int | None], first: str, second: str) -> str:
    """Compares the first model's lock-in with the second's on the same IDs and on the aligned IDs."""
    mine, *others = order
    if mine is None:
        return f"{first} does not lock in"
    later = [o is None or o > mine for o in others]
    if all(later):
        return f"{second} locks in later (or never) in both variants"
    if not any(later):
        return f"{second} locks in no later than {first} in both variants"
    return f"{second} locks in later in one variant only"
