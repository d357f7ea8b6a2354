"""The logit lens beside §7's flattened L (issue 24): where in depth each model finds " Mary".

Each layer's residual stream is decoded by the model's own final norm and unembedding
(`compare.logit_lens`) on the IOI prompt; per layer, at the last position (where the thesis reads
the prediction): P(" Mary"), its rank and the KL divergence from the model's own output, and a
layer × position figure of P(" Mary") (part of section 7).
"""
from __future__ import annotations

import pandas as pd

from ..figures import thesis as thesis_figures
from ..analyses.lens import logit_lens
from .context import Context
from .plan import IOI, MARY
from .report import Row, Section
from .uncertainty import EXACT

FRAME = ["model", "layer", "position", "token", "target", "target_prob", "target_rank", "kl", "entropy"]


def lens_rows(ctx: Context, s: Section) -> Row:
    """Adds the lens's numbers, figure and frame (model, layer, position) to `s`; returns its row."""
    frames, tokens, rows = [], {}, []
    for h in ctx.handles:
        ctx.check_stop()
        df = logit_lens(IOI, model=h, target=MARY)
        tokens.update(df.attrs["tokens"])
        frames.append(df[FRAME])
        last = df[df["position"] == df["position"].max()].sort_values("layer")
        n, where = len(last), dict(position=int(last["position"].iloc[0]), layers=last["layer"].tolist())
        top = last[last["target_rank"] == 0]["layer"]
        rows.append(s.add(f"lens_p_mary[{h.name}]", f"P({MARY!r}) per layer under the lens, {h.name}",
                          last["target_prob"].round(4).tolist(), f"softmax of the layer's residual decoded by the "
                          f"final norm and unembedding, at the last position, read at {MARY!r}", n=n,
                          uncertainty=EXACT + " (one deterministic forward)", **where))
        rows.append(s.add(f"lens_rank[{h.name}]", f"rank of {MARY!r} per layer, {h.name}",
                          last["target_rank"].tolist(), f"tokens the layer's lens ranks strictly above {MARY!r} "
                          "(0: its top token)", n=n, uncertainty=EXACT, **where))
        rows.append(s.add(f"lens_kl[{h.name}]", f"KL to the final output per layer, {h.name}",
                          last["kl"].round(4).tolist(), "KL(p_final ‖ p_layer) in nats at the last position "
                          "(0 at the last layer, whose lens is the model's output)", n=n, uncertainty=EXACT, **where))
        rows.append(s.add(f"lens_first_top[{h.name}]", f"first layer whose top token is {MARY!r}, {h.name}",
                          int(top.iloc[0]) if len(top) else None, f"the shallowest layer at which the lens at the "
                          f"last position ranks {MARY!r} first (— where none does)", n=n, uncertainty=EXACT, **where))
    lens = pd.concat(frames, ignore_index=True)
    s.frames["lens"] = lens
    s.figure("lens", thesis_figures.lens_heatmap(lens, tokens),
             f"Logit lens on the IOI prompt: P({MARY!r}) when each layer's residual stream is decoded by the model's "
             "own final norm and unembedding, per layer × position (the last row is the model's output).")
    return s.row("Logit lens (beside Figs. 24–25)", f"not in the thesis: at which depth {MARY!r} becomes the "
                 "prediction, the view the flattened L gives of the output alone", rows)
