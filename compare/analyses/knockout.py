"""Knockout: block information flow from source positions to a target position, and read what
happens to the prediction at the last position (Geva et al. 2023 for attention; Endy et al.
2025, "Mamba Knockout", for state-space models).

Exactly what is removed, at every layer in `layers`, by the layer's kind (the family's
`Family.knockout_hooks`; other layers run as usual):

    attention (GPT-2, Pythia)   the edges target → s for s in `sources` are masked before the
                                softmax (their scores set to the dtype's minimum, like the causal
                                mask), in every head: the target's row renormalises over the
                                positions left. Every other row is untouched.
    selective SSM (Mamba)       the sources' writes are removed from the target's state as the
                                target reads it out:
                                    h'_t = h_t − Σ_{s ∈ S} (Π_{k=s+1..t} Ā_k) ⊙ w_s,   w_s = B̄_s x_s
                                in every channel and state dimension, so y_t loses exactly
                                Σ_{s ∈ S} α[t, s] x_s, the terms Mamba's hidden attention α
                                (`hidden_attention`) attributes to the sources. The state carried
                                to later positions is unchanged (attention knockout, likewise,
                                changes the target's row only), and the skip D ⊙ x_t stays; x_t
                                itself still mixes the three positions before it through the
                                causal conv, which is not a flow through the state.

Sources must be positions ≤ target (later positions never reach it). On attention, at least one
position ≤ target must stay open: a row with every edge masked has no distribution to
renormalise. A knockout of nothing (no sources, or no layers) runs the plain forward and changes
nothing, exactly.

The prediction is compared with the same run without knockout: p_before and p_after are the
probabilities of `answer` (default: the unknocked run's top token) at the last position, kl the
KL divergence KL(before ‖ after) of the two next-token distributions.
"""
from __future__ import annotations


import pandas as pd
import torch

from ..handle.inputs import is_int, position_list, prompt_ids, token_id
from ..base.hooks import temporary_hooks
from ..engine.convention import analysis
from ..handle.model import Model

COLUMNS = ("model", "target", "sources", "layers", "predicted", "predicted_knockout", "p_before", "p_after",
           "delta_p", "kl")


@analysis
def knockout(prompt, *, model, sources, target, layers, answer=None) -> pd.DataFrame:
    """One row per model (`COLUMNS`): the prediction at the last position with and without the
    flow sources → target blocked at `layers` (module docstring).

    prompt: text or token IDs [T]. model: a `Model`, a source for `load_model`, or a list of them.
    sources: positions (negative counts from the end), may be empty. target: one position.
    layers: layers to knock out at (may be empty). answer: one-token string or ID whose
    probability is reported (default: the unknocked prediction).
    dtype, device, progress, stop: the calling convention (`engine.convention`).
    """
    rows = []
    for handle in [model]:  # one loaded handle; a list runs model by model (`engine.convention`)
        ids = prompt_ids(handle, prompt)
        t, S, L = _check(handle, ids.shape[1], sources, target, layers)
        before = handle.logits(ids)[0, -1]
        after = knocked_logits(handle, ids, S, t, L) if S and L else before
        a = before.argmax().item() if answer is None else token_id(handle, answer, "answer")
        p_before, p_after = torch.softmax(before, -1), torch.softmax(after, -1)
        kl = (p_before * (torch.log_softmax(before, -1) - torch.log_softmax(after, -1))).sum().item()
        predicted, knocked = handle.decode_tokens([before.argmax().item(), after.argmax().item()])
        rows.append({"model": handle.name, "target": t, "sources": S, "layers": L, "predicted": predicted,
                     "predicted_knockout": knocked, "p_before": p_before[a].item(), "p_after": p_after[a].item(),
                     "delta_p": (p_after[a] - p_before[a]).item(), "kl": kl})
    return pd.DataFrame(rows, columns=list(COLUMNS))


@torch.no_grad()
def knocked_logits(handle: Model, ids: torch.Tensor, sources: tuple[int, ...], target: int,
                   layers: tuple[int, ...]) -> torch.Tensor:
    """Last-position logits [V] of the forward with the knockout, hooks held for this call only;
    each layer's knockout is its family's (`Family.knockout_hooks`, by the layer's kind)."""
    arch = handle.arch
    with handle.lock, temporary_hooks() as hooks:
        for layer in layers:
            hooks.extend(arch.knockout_hooks(handle.module, layer, sources, target))
        return handle.logits(ids)[0, -1]


def _check(handle: Model, T: int, sources, target, layers):
    if not is_int(target) or not -T <= target < T:
        raise ValueError(f"target must be one token position in {-T}..{T - 1} for this {T}-token prompt, "
                         f"got {target!r}")
    t = int(target) % T
    S = tuple(sorted(position_list(sources, T, "sources", empty=True)))
    if S and S[-1] > t:
        raise ValueError(f"sources must be positions ≤ target ({t}): later positions never reach it, got {list(S)}")
    L = handle.n_layers
    values = [layers] if is_int(layers) else layers
    try:
        values = list(values)
    except TypeError:
        values = None
    if values is None or not all(is_int(v) and -L <= v < L for v in values):
        raise ValueError(f"layers must be a list of ints in 0..{L - 1} for {handle.name} (may be empty), got {layers!r}")
    layers = tuple(sorted(dict.fromkeys(int(v) % L for v in values)))
    arch = handle.arch
    attention = [l for l in layers if arch.knockout_renormalises(handle.module, l)]
    if S and attention and set(range(t + 1)) <= set(S):
        raise ValueError(f"{handle.name}: sources cover every position 0..{t}; attention needs at least one edge "
                         f"into the target left open to renormalise over (layers {attention} attend)")
    for l in layers:
        why = arch.knockout_refusal(handle.module, l)
        if why:
            raise ValueError(f"layers: layer {l} of {handle.name} is an {handle.layer_kind(l)} layer; {why}")
    return t, S, layers
