"""Section 5: periodic ID inputs (Figs. 18–21, hypotheses 2–3, Conclusion 7).

Each cycle of the thesis, repeated to `Plan.periodic_length` tokens, runs three ways: the first
model on the IDs (Fig. 19), the second on the same IDs (Fig. 20: other text; it tracks the ID it
is fed) and the second on the aligned IDs (Fig. 21: the same text).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..figures import base as figures
from ..measures import metrics
from ..analyses.comparison import Run
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
        s.row(f"cycle {list(cycle)}: K of {first} (Fig. 18)", FIG18[tuple(cycle)], k_shape(s, cycle, views[first]))
        if tuple(cycle) == FIRST_GUESS_CYCLE:
            s.row(f"cycle {list(cycle)}: {first}'s first predictions (§6.4.2, Fig. 19)",
                  f"the model first predicts {FIRST_GUESS} (written '),'), a token close to 6660, then the cycle",
                  first_guesses(s, cycle, views[first], ids))
        frame = pd.concat([pd.DataFrame({"model": label, "position": np.arange(len(run.ids)), "token": run.tokens,
                                         "P_next": p_next(run)}) for label, run in views.items()], ignore_index=True)
        stem = "_".join(map(str, cycle))
        s.figure(stem, figures.pattern_lock_in(frame, {label: run.lock_in for label, run in views.items()}),
                 f"Cycle {list(cycle)}: P of the next pattern token per position, lock-in dashed.")
        s.frames[f"p_next_{stem}"] = frame
    return s


FIG18 = {(4200, 6660): "K's values widen at T = 50 (Fig. 18, left)",
         (42, 69): "K makes a phase jump at T ∈ {2, 3} (Fig. 18, right)"}
FIG18_WIDEN_T, FIG18_JUMP_T = 50, (2, 3)
FIRST_GUESS_CYCLE, FIRST_GUESS = (4200, 6660), 582
EARLY = 5  # positions read as "first" predictions


def k_shape(s: Section, cycle, run: Run) -> list:
    """Fig. 18 measured on the first model's K: its spread at T = 50 against the median spread, and the
    position of the largest jump of the K row between consecutive positions."""
    K = np.asarray(run.k, dtype=np.float64)
    spread = K.std(axis=1)
    T = len(K)
    widen = float(spread[FIG18_WIDEN_T] / np.median(spread)) if T > FIG18_WIDEN_T else None
    jumps = np.sqrt(((K[1:] - K[:-1]) ** 2).mean(axis=1))
    jump_at = int(np.argmax(jumps)) + 1
    return [s.add(f"k_widen_T50[{cycle}]", "std of K at T = 50 ÷ median std over positions", widen,
                  "the standard deviation of K's row at T = 50 divided by its median over all positions (> 1: "
                  "wider than usual)", n=T, uncertainty=EXACT + " (one forward pass)" if widen is not None else
                  f"not measured: the prompt is {T} tokens, T = 50 needs 51", t=FIG18_WIDEN_T),
            s.add(f"k_widest[{cycle}]", "position of the widest K row", int(np.argmax(spread)),
                  "the position whose K row has the largest standard deviation", n=T, uncertainty=EXACT),
            s.add(f"k_jump_at[{cycle}]", "position of the largest jump of K", jump_at,
                  "the position t whose K row differs most (RMS) from the row at t − 1", n=T - 1,
                  uncertainty=EXACT + f"; jump {jumps.max():.3g} against a median of {np.median(jumps):.3g}",
                  thesis_positions=list(FIG18_JUMP_T))]


def first_guesses(s: Section, cycle, run: Run, ids: list[int]) -> list:
    """§6.4.2: the first model's first predictions on the cycle, and whether it predicts 582 before locking in."""
    early = [int(i) for i in run.prediction_ids[:EARLY]]
    lock = run.lock_in if run.lock_in is not None else len(run.ids)
    before = [int(i) for i in run.prediction_ids[:lock]]
    reduced = list(cycle) != list(ids)
    return [s.add(f"first_predictions[{cycle}]", f"predicted IDs at T = 0 … {EARLY - 1}", early,
                  "the first model's argmax at the first positions of the cycle", n=len(early), uncertainty=EXACT,
                  texts=run.predictions[:EARLY]),
            s.add(f"predicts_{FIRST_GUESS}[{cycle}]", f"predicts {FIRST_GUESS} before locking in",
                  None if reduced else FIRST_GUESS in before,
                  f"whether ID {FIRST_GUESS} is the prediction at any position before the lock-in", n=len(before),
                  uncertainty=EXACT if not reduced else "not measured: the cycle was reduced to this vocabulary")]


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
