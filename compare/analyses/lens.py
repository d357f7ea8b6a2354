"""The logit lens (nostalgebraist 2020): what each layer's residual stream would predict if the
model stopped there.

Layer l's residual (the family's `lens_point`, resid_post: for Mamba the residual plus the
mixer's output, as the block adds them) is decoded by the model's own head, the final norm and
the unembedding (`Family.head`), over the real vocabulary (`Model.vocab_size`). At the last
layer this is the model's forward, so the lens there equals `Model.logits` exactly. A tuned lens
(`compare.analyses.tuned_lens`) first maps the residual through its layer's translator.

Per (model, layer, position) the frame holds, with p_l the lens's distribution at layer l and
p_L the model's own (the last layer's):
    top_tokens, top_ids, top_probs   the k most probable tokens under p_l
    target, target_prob, target_rank the target's text, p_l(target), and how many tokens p_l
                                     ranks strictly above it (0: the top token)
    kl                               KL(p_L ‖ p_l) = Σ p_L (log p_L − log p_l), in nats
    entropy                          −Σ p_l log p_l, in nats
Without a target, each position's target is the model's own top token there (when does a
layer find the answer the model gives).

One forward (`engine.record.record_pass`) keeps every chosen layer's residual at the chosen
positions (L · P · d floats) and the model's logits there; the last layer is not decoded again
(its lens is those logits). The other layers are decoded several at a time, about HEAD_ROWS rows
of logits per head call (`decode_layers`; one layer's P rows where P is larger), and read with
two [P, V] buffers shared by every layer. On this CPU the rows of a layer decoded alongside
others equal those decoded alone from about 4 positions on; at 1 to 3 positions the BLAS takes
another kernel and they differ in the last bits.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from ..base import memory
from ..handle.inputs import layer_list, position_list, prompt_ids, token_id
from ..engine.convention import analysis
from ..engine.record import record_pass
from ..engine.restart import HEAD_ROWS
from ..handle.model import Model
from .signatures import LOGIT_LENS

COLUMNS = ("model", "layer", "kind", "position", "token", "top_tokens", "top_ids", "top_probs", "target", "target_prob",
           "target_rank", "kl", "entropy")
FP32_BYTES = 4


@dataclass(frozen=True)
class Lens:
    """One model's validated logit-lens call."""
    handle: Model
    ids: torch.Tensor  # [1, T]
    layers: tuple[int, ...]
    positions: tuple[int, ...]
    target: int | None
    translators: object  # a `tuned_lens.TunedLens` for this model, or None (the logit lens)


@analysis
def logit_lens(prompt, *, model, layers=None, positions=None, target=None, k: int = 5, lens=None) -> pd.DataFrame:
    """The lens of every chosen layer at every chosen position (module docstring).

    prompt: text or token IDs [T]. model: a `Model`, a source for `load_model`, or a list of
    them (rows for each). layers, positions: default all (negative counts from the end).
    target: a one-token string (" Mary") or a token ID; None: the model's own top token.
    k: how many top tokens to list. lens: a `tuned_lens.TunedLens` (or {model name: TunedLens}
    for several models) to decode with its translators; None is the logit lens.
    dtype, device, progress, stop: the calling convention (`engine.convention`).
    """
    k = LOGIT_LENS["k"].validate(k)  # its signature
    calls = [prepare(handle, prompt, layers, positions, target, lens) for handle in [model]]  # one loaded handle (`engine.convention`)
    frames = [_lens_rows(call, int(k)) for call in calls]
    df = pd.concat(frames, ignore_index=True)[list(COLUMNS)]
    df.attrs.update(tokens={c.handle.name: c.handle.decode_tokens(c.ids[0].tolist()) for c in calls},
                    lens="logit" if lens is None else "tuned")
    return df


def prepare(handle: Model, prompt, layers, positions, target, lens) -> Lens:
    """Check one model's arguments before any compute; ValueError names the argument."""
    ids = prompt_ids(handle, prompt, "prompt")
    layer_ids = layer_list(handle, layers)
    position_ids = position_list(list(range(ids.shape[1])) if positions is None else positions, ids.shape[1])
    target_id = None if target is None else token_id(handle, target, "target")
    translators = lens.get(handle.name) if isinstance(lens, dict) else lens
    if translators is not None:
        check = getattr(translators, "check", None)
        if check is None:
            raise ValueError(f"lens must be a tuned_lens.TunedLens (or a dict of them by model name), "
                             f"got {type(translators).__name__}")
        check(handle, "lens")
    elif isinstance(lens, dict):
        raise ValueError(f"lens: no tuned lens for {handle.name}; the dict has {sorted(lens)}")
    return Lens(handle, ids, layer_ids, position_ids, target_id, translators)


def residuals(handle: Model, ids: torch.Tensor, layers, positions=None):
    """(final logits [b, P, V], exactly `Model.logits` at the kept positions, {layer: lens point
    [b, P, d]}) from one `engine.record.record_pass`.

    positions: the positions kept (default all); the residuals keep the model's dtype. The pass
    runs the model's own head over every position rather than stopping before it (`stop=`) and
    decoding the kept positions alone: the head's matmul over a few rows rounds otherwise than
    over all T (another BLAS kernel: 1 to 3 of 14 rows differ in the last bits on this CPU), and
    the lens compares with the model's own distribution exactly."""
    lens_point = handle.arch.lens_point
    memory.check_fits(FP32_BYTES * len(layers) * ids.numel() * handle.arch.dims(handle.module.config)["d"],
                      f"keeping {len(layers)} layers' residuals of {ids.numel():,} tokens of {handle.name}",
                      "pass fewer layers or a shorter prompt")
    at = slice(None) if positions is None else list(positions)
    keep = None if positions is None else (lambda name, layer, value: value.detach()[:, at])  # a copy
    recording = record_pass(handle, ids, [(lens_point, l) for l in layers], keep=keep, logits_at=at)
    return recording.logits, {l: recording.points[lens_point, l] for l in layers}


def decode_layers(handle: Model, resids: dict[int, torch.Tensor], translators=None) -> dict[int, torch.Tensor]:
    """Float logits {layer: [b, ..., V]} over the real vocabulary of layers' residuals {layer: [b, ..., d]}:
    each through its layer's translator if given, then all through the model's final norm and
    unembedding in one head call, which streams the unembedding once for them (at 14 positions of
    the mamba-130m shape, 23 layers in one matmul take 0.29 s of one core against 0.67 s a layer
    at a time)."""
    if not resids:
        return {}
    translated = [r if translators is None else translators.translate(l, r) for l, r in resids.items()]
    logits = handle.arch.head(handle.module, torch.cat(translated))[..., : handle.vocab_size].float()
    return dict(zip(resids, logits.split([len(r) for r in translated])))


@torch.no_grad()
def _lens_rows(call: Lens, k: int) -> pd.DataFrame:
    handle, P, layers = call.handle, list(call.positions), list(call.layers)
    last = handle.n_layers - 1  # its lens is the model's own distribution (no translator there): not decoded again
    every = P == list(range(call.ids.shape[1]))  # keep the whole [1, T, d], no copy of the positions
    final, kept = residuals(handle, call.ids, [l for l in layers if l != last], None if every else P)
    final_logp = torch.log_softmax(final[0], -1)
    p_final = final_logp.exp()
    target = (final_logp.argmax(-1) if call.target is None
              else torch.full((len(P),), call.target, dtype=torch.long, device=final.device))
    tokens = handle.decode_tokens(call.ids[0, P].tolist())
    target_text = handle.decode_tokens(target.tolist())
    rows, logp_buffer, scratch = [], torch.empty_like(final_logp), torch.empty_like(final_logp)  # one for every layer
    per = max(1, HEAD_ROWS // len(P))  # layers decoded in one head call: the unembedding streamed once for them
    with handle.lock:
        for chunk in [layers[i:i + per] for i in range(0, len(layers), per)]:
            logits = decode_layers(handle, {l: kept.pop(l) for l in chunk if l != last}, call.translators)
            for layer in chunk:
                logp = final_logp if layer == last else torch.log_softmax(logits.pop(layer)[0], -1, out=logp_buffer)
                stats = lens_stats(logp, final_logp, p_final, target, k, scratch)
                top_text = handle.decode_tokens([i for ids in stats["top_ids"] for i in ids])  # one call a layer
                width = len(stats["top_ids"][0])
                for i, p in enumerate(P):
                    rows.append((handle.name, layer, handle.layer_kind(layer), p, tokens[i],
                                 tuple(top_text[i * width:(i + 1) * width]), tuple(stats["top_ids"][i]),
                                 tuple(stats["top_probs"][i]), target_text[i], stats["target_prob"][i],
                                 stats["target_rank"][i], stats["kl"][i], stats["entropy"][i]))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def lens_stats(logp: torch.Tensor, final_logp: torch.Tensor, p_final: torch.Tensor, target: torch.Tensor,
               k: int, scratch: torch.Tensor) -> dict:
    """Per row of a layer's log-probabilities [P, V], against the model's own, final_logp [P, V]
    and p_final = exp(final_logp) (taken once for every layer): top-k, P and rank of target [P],
    KL(final ‖ layer) and entropy, as Python lists.

    scratch: a float tensor [P, V] that each [P, V] term is written in before its row sum (one for
    every layer: at 256 positions a fresh one costs more in page faults than the arithmetic).
    The rank counts the tokens above the target as 0.0/1.0 floats: exact below 2^24 tokens, and
    their sum an order of magnitude faster than a sum of booleans."""
    top = logp.topk(min(k, logp.shape[-1]), dim=-1)
    t = logp.gather(-1, target[:, None])
    kl = torch.sub(final_logp, logp, out=scratch).mul_(p_final).sum(-1)
    entropy = -torch.exp(logp, out=scratch).mul_(logp).sum(-1)
    rank = torch.gt(logp, t, out=scratch).sum(-1).long()
    return {"top_ids": top.indices.tolist(), "top_probs": top.values.exp().double().tolist(),
            "target_prob": t[:, 0].exp().double().tolist(), "target_rank": rank.tolist(),
            "kl": kl.double().tolist(), "entropy": entropy.double().tolist()}
