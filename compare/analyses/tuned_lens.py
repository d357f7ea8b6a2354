"""The tuned lens (Belrose et al. 2023): one learned affine translator per layer, trained so that
decoding the translated residual matches the model's own final distribution.

Layer l's translator maps a residual r [..., d] to r + W_l r + b_l, with W_l [d, d] and b_l [d]
initialised to zero, so an untrained lens is the logit lens exactly (r + 0 = r). The last layer
has no translator: its residual already decodes to the model's output (KL 0). Training
minimises, for every other layer at once, the mean over tokens of KL(p_L ‖ p_l), p_l the
distribution of the translated residual decoded (`lens.decode_layers`); the model is frozen
(gradients are taken with respect to the translators only, so nothing is left on the shared
model).

Corpus (`corpus_ids`): a list of texts, a saved `datasets_gen` build (its `text` column, every
split) or a text file; every text is tokenised, the tokens packed end to end and cut into
windows of `seq_len` tokens. A share HELD_OUT of the windows (at most HELD_OUT_MAX) is held out
(`held_out_split`); each step reads `batch` of the others, drawn with a generator seeded by
`seed`, by default STEPS steps of BATCH windows of SEQ_LEN tokens.

Optimiser (as the tuned-lens library of Belrose et al.): SGD with Nesterov momentum MOMENTUM at
a peak rate `lr` (LR = 1.0, scaled by 1 − MOMENTUM so that it is the step per unit of the
averaged gradient), rising over `warmup` steps (default none) and then decaying linearly
(`lr_at`); each layer's gradient is clipped to norm CLIP on its own, the layers being separate
problems. An earlier version ran Adam at a constant 1e-3: Adam's steps are about lr per weight
whatever the gradient, so the top layers, where the logit lens is already within 0.04 nats and
the gradient is small, were pushed away from it and decoded worse than the logit lens; SGD's
steps shrink with the layer's gradient. After the last step each layer keeps its translator
only if it lowers the mean KL on the held-out windows, and is reset to the identity otherwise
(`_select`; ``lens.meta["held_out"]`` names the windows, both KLs per layer and the layers
reset), so on those windows no layer decodes worse than the logit lens.

Saved lens (`save`, `load`): `lens.safetensors` (W_l, b_l per layer, fp32) and `lens.json`
(the model's source name, family, layers, width, the SHA-256 of its weights, the training
parameters). A lens is refused on a model whose weights have another digest.

Memory per step: the batch's residuals at every layer (L · batch · seq_len · d floats) and one
layer's logits with their gradient (2 · batch · seq_len · V floats) at a time.

Time: a step costs, per layer and token, the unembedding and its gradient, 4 · d · V FLOP
(154 MFLOP at the 130m shapes, 3.6 GFLOP per token over 23 layers), and a softmax over V;
and the frozen model's forward. Four changes cut it: the frozen model reads PREFETCH steps'
windows in one batched forward (at the mamba-130m shape 6 ms of CPU per token instead of 44
for one window of 64 alone, where it was a quarter of a step); the layers are decoded
together, HEAD_ROWS rows of logits at a time (one matmul streams the unembedding for several
layers); that unembedding runs in bfloat16 under autocast (``head_dtype``; 4× the float32
matmul on this CPU, which has AVX-512 BF16; the gradient's cosine with the float32 one > 0.99
in the tests); and the loss is the soft cross-entropy logsumexp(z_l) − Σ p_L z_l (its
gradient is the KL's, p_L's entropy being a constant) with p_L computed once per window, not
once per layer. The defaults (STEPS steps of BATCH × SEQ_LEN tokens: 100 × 64 =
6,400 tokens) are sized for a CPU: at the mamba-130m shape (random weights;
`benchmarks/bench_tuned_lens.py`, 2 threads at a load of 3–7) the default run took 419 s of CPU (about
3.5 min on two idle cores; the held-out choice about 37 s of it) and lowered the KL on a
held-out text at all 23 layers with a translator: layer 0 2.86 → 0.17 nats, layer 9 0.55 →
0.10, layer 22 0.0049 → 0.0045. Adam at a constant 1e-3, run the same way, took 429 s and
reached 0.19 and 0.11 there but raised layers 19–22 (0.034 → 0.036 … 0.005 → 0.014). On a GPU
train longer (Belrose et al.: 250 steps of 2^18 tokens).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
import weakref
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..base import memory
from ..handle.inputs import handle_of, is_int
from ..handle.vocabularies import check_encodable
from ..base.checks import check_callbacks
from .lens import decode_layers, residuals
from ..handle.model import Model

FP32_BYTES = 4
STEPS, LR, SEQ_LEN, BATCH = 100, 1.0, 64, 1
LR_MAX = float(torch.finfo(torch.float32).max)
"""The largest lr: SGD adds lr·(1 − MOMENTUM)·gradient to fp32 translators, a scale that must fit float32."""
MOMENTUM = 0.9
"""SGD's Nesterov momentum (Belrose et al.'s tuned-lens library: 0.9, lr 1.0 scaled by 1 − momentum)."""
CLIP = 1.0
"""Each layer's gradient norm (W_l and b_l together) is clipped to this before a step."""
HELD_OUT, HELD_OUT_MAX = 0.1, 8
"""Share of the windows held out from training (at most HELD_OUT_MAX) to choose translator or identity."""
HEAD_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
PREFETCH = 16
"""Steps whose windows go through the frozen model in one forward (`_frozen`)."""
HEAD_ROWS = 1024
"""Rows of logits decoded at once in a step, several layers' together (`_grads`)."""
WEIGHTS, META = "lens.safetensors", "lens.json"
_DIGESTS: "weakref.WeakKeyDictionary[nn.Module, str]" = weakref.WeakKeyDictionary()  # a cache, not state


class TunedLens(nn.Module):
    """Translators of layers 0..L-2 of one model (the last layer decodes as it is)."""

    def __init__(self, source: str, family: str, digest: str, n_layers: int, d: int, meta: dict | None = None):
        super().__init__()
        self.source, self.family, self.digest, self.n_layers, self.d = source, family, digest, n_layers, d
        self.meta = dict(meta or {})
        self.weight = nn.ParameterList(nn.Parameter(torch.zeros(d, d)) for _ in range(n_layers - 1))
        self.bias = nn.ParameterList(nn.Parameter(torch.zeros(d)) for _ in range(n_layers - 1))

    @classmethod
    def identity(cls, handle: Model) -> "TunedLens":
        """The untrained lens of `handle`: every translator the identity (the logit lens)."""
        return cls(handle.name, handle.family, weights_digest(handle), handle.n_layers,
                   handle.arch.dims(handle.module.config)["d"])

    def translate(self, layer: int, resid: torch.Tensor) -> torch.Tensor:
        """resid [..., d] + W_layer resid + b_layer, in fp32, returned in resid's dtype."""
        if layer == self.n_layers - 1:
            return resid
        r = resid.float()
        return (r + nn.functional.linear(r, self.weight[layer], self.bias[layer])).to(resid.dtype)

    def check(self, handle: Model, what: str = "lens") -> None:
        """Refuse a model other than the one this lens was trained for (by its weights' digest)."""
        if self.digest != weights_digest(handle) or self.n_layers != handle.n_layers:
            raise ValueError(f"{what}: this tuned lens was trained for {self.source} ({self.family}, "
                             f"{self.n_layers} layers, weights {self.digest[:12]}…), not for {handle.name} "
                             f"({handle.family}, {handle.n_layers} layers, weights {weights_digest(handle)[:12]}…); "
                             "train one for this model with train_tuned_lens")


def weights_digest(handle: Model) -> str:
    """SHA-256 of the model's parameters and buffers (names, dtypes, shapes and bytes), cached per module."""
    module = handle.module
    cached = _DIGESTS.get(module)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().contiguous().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    digest = h.hexdigest()
    _DIGESTS[module] = digest
    return digest


# --- the corpus ----------------------------------------------------------------------------------

def corpus_texts(texts) -> list[str]:
    """The texts of a corpus: a list of strings, a saved datasets_gen build (folder) or a text file."""
    if isinstance(texts, (str, Path)):
        path = Path(texts)
        if path.is_dir():
            from datasets import load_from_disk

            try:
                splits = load_from_disk(str(path))
            except (OSError, ValueError) as err:
                raise ValueError(f"texts: {path} is a folder but not a saved datasets_gen build ({err})") from None
            return [text for split in splits.values() for text in split["text"]]
        if path.is_file():
            try:
                return [path.read_text(encoding="utf-8")]
            except UnicodeDecodeError as err:
                raise ValueError(f"texts: {path} is not UTF-8 text ({err.reason} at byte {err.start}); give a text "
                                 "file, a list of strings or a saved datasets_gen build folder") from None
        raise ValueError(f"texts must be a list of strings, a saved datasets_gen build folder or a text file; "
                         f"{str(texts)!r} is neither a folder nor a file")
    if not isinstance(texts, (list, tuple)) or not texts:
        raise ValueError(f"texts must be a non-empty list of strings, a saved datasets_gen build folder or a "
                         f"text file, got {type(texts).__name__}")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"texts[{bad[0]}] must be a string, got {type(texts[bad[0]]).__name__}")
    for i, text in enumerate(texts):
        check_encodable(text, f"texts[{i}]")
    return list(texts)


def corpus_ids(handle: Model, texts, seq_len: int) -> torch.Tensor:
    """Windows [N, n] of the corpus's tokens packed end to end, n = min(seq_len, tokens, context)."""
    pieces = [handle.tokenizer.encode(t, add_special_tokens=False) for t in corpus_texts(texts) if t]
    tokens = [i for piece in pieces for i in piece]
    if not tokens:
        raise ValueError(f"texts: every text tokenises to nothing in {handle.name}'s tokenizer; the lens needs tokens "
                         "to train on")
    n = min(seq_len, len(tokens), handle.max_positions or seq_len)
    count = len(tokens) // n
    return handle.as_input([tokens[i * n:(i + 1) * n] for i in range(count)])


# --- training -----------------------------------------------------------------------------------

def train_tuned_lens(model, texts, *, steps: int = STEPS, lr: float = LR, seed: int = 0, seq_len: int = SEQ_LEN,
                     batch: int = BATCH, warmup: int = 0, head_dtype: str = "bfloat16", progress=None,
                     stop=None) -> TunedLens:
    """Translators for every layer but the last of `model`, from identity (module docstring).

    model: a `Model` or a source for `load_model`. texts: the corpus (`corpus_texts`).
    lr: the peak learning rate of SGD with Nesterov momentum MOMENTUM, in units of the
    momentum-averaged gradient (`lr_at` gives step t's); warmup: steps over which it rises
    linearly before it decays linearly (`lr_at`). head_dtype: "bfloat16" (default) runs the
    unembedding of the training steps in bfloat16 under autocast, "float32" in fp32 (module
    docstring, "Time"); decoding with the lens (`logit_lens(..., lens=)`) is always in the model's
    dtype. The windows of `held_out_split` are never trained on; after the last step each layer
    keeps its translator only if it decodes them with a lower KL than the identity (`_select`).
    progress(done, steps) after each step; stop (``is_set()``) before each: the lens then holds the
    steps done (selected as above). ``lens.meta`` records the parameters, the optimiser and
    schedule, the steps done, the tokens, the time, the mean KL of the last step per layer and the
    held-out split with its KL per layer; a translator that became NaN or infinite (lr too large)
    is reset to the identity with a RuntimeWarning, its layer in ``meta["diverged_layers"]``.
    """
    handle = handle_of(model)
    for name, value in (("steps", steps), ("seed", seed), ("seq_len", seq_len), ("batch", batch), ("warmup", warmup)):
        least = 0 if name in ("seed", "steps", "warmup") else 1
        if not is_int(value) or value < least:
            raise ValueError(f"{name} must be an integer ≥ {least}, got {value!r}")
    if warmup > 0 and warmup >= steps:
        raise ValueError(f"warmup must be below steps ({steps}) so that the learning rate decays after it, got {warmup}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.integer, np.floating)) or not (
            math.isfinite(lr) and 0 < lr <= LR_MAX):
        raise ValueError(f"lr must be a finite number > 0 and at most {LR_MAX:.3g} (float32's largest: the "
                         f"translators' step), got {lr!r}")
    lr = float(lr)  # as the saved lens's JSON records it
    if head_dtype not in HEAD_DTYPES:
        raise ValueError(f"head_dtype must be one of {', '.join(HEAD_DTYPES)}, got {head_dtype!r}")
    check_callbacks(progress, stop)
    windows = corpus_ids(handle, texts, int(seq_len))
    generator = torch.Generator().manual_seed(int(seed))
    held_out = held_out_split(len(windows), generator)
    train = torch.tensor(sorted(set(range(len(windows))) - set(held_out)), dtype=torch.long)
    lens = TunedLens.identity(handle).to(handle.device)
    d, V = lens.d, handle.vocab_size
    memory.check_fits(FP32_BYTES * PREFETCH * batch * windows.shape[1] * (handle.n_layers * d + 3 * V),
                      f"{PREFETCH} tuned-lens steps' frozen forward of {batch} × {windows.shape[1]} tokens each of "
                      f"{handle.name}", "lower batch or seq_len")
    optimiser = torch.optim.SGD(lens.parameters(), lr=lr, momentum=MOMENTUM, nesterov=True)
    layers = range(handle.n_layers - 1)
    start, done, kl, ahead = time.perf_counter(), 0, {}, []
    for step in range(steps):
        if stop is not None and stop.is_set():
            break
        if not ahead:  # the next PREFETCH steps' windows through the frozen model in one forward
            picks = [train[torch.randint(len(train), (batch,), generator=generator)]
                     for _ in range(min(PREFETCH, steps - step))]
            p_final, kept = _frozen(handle, windows[torch.cat(picks).to(windows.device)], layers)
            ahead = [(p_final[i:i + batch], {l: r[i:i + batch] for l, r in kept.items()})
                     for i in range(0, len(p_final), batch)]
        optimiser.zero_grad(set_to_none=True)
        kl = _grads(handle, lens, *ahead.pop(0), layers, HEAD_DTYPES[head_dtype])
        for l in layers:  # each layer's own problem: its step is not shrunk by another layer's gradient
            nn.utils.clip_grad_norm_([lens.weight[l], lens.bias[l]], CLIP)
        for group in optimiser.param_groups:
            # SGD's momentum buffer sums gradients to 1/(1 − β) of one: (1 − β) makes lr the step per gradient
            group["lr"] = (1 - MOMENTUM) * lr_at(step, steps, lr, warmup)
        optimiser.step()
        done = step + 1
        if progress is not None:
            progress(done, steps)
    diverged = _reset_diverged(lens, layers, lr)
    selection = _select(handle, lens, windows[held_out], layers) if held_out else {}
    lens.meta = {"steps": done, "steps_asked": int(steps), "lr": lr, "seed": int(seed), "seq_len": windows.shape[1],
                 "batch": int(batch), "head_dtype": head_dtype, "windows": len(windows),
                 "tokens": int(windows.numel()), "seconds": round(time.perf_counter() - start, 3),
                 "optimizer": {"name": "SGD", "momentum": MOMENTUM, "nesterov": True, "clip_per_layer": CLIP,
                               "lr_scaled_by": "1 - momentum"},
                 "schedule": {"name": "linear warmup then linear decay", "warmup": int(warmup),
                              "lr_last": lr_at(done - 1, steps, lr, warmup) if done else None},
                 "kl_last_step": {str(layer): round(value, 6) for layer, value in kl.items()},
                 "diverged_layers": diverged,
                 "held_out": {"windows": held_out, **selection}}
    return lens.requires_grad_(False)


def _reset_diverged(lens: TunedLens, layers, lr: float) -> list[int]:
    """Reset to the identity the translators that are no longer finite (a learning rate so large that
    the steps overflowed float32), warning with the layers; returns them. Without held-out windows
    (`_select`) nothing else would keep such a lens from decoding NaN, and `load` refuses it."""
    diverged = [l for l in layers if not (torch.isfinite(lens.weight[l]).all() and torch.isfinite(lens.bias[l]).all())]
    with torch.no_grad():
        for l in diverged:
            lens.weight[l].zero_()
            lens.bias[l].zero_()
    if diverged:
        warnings.warn(f"tuned lens: the translators of layers {diverged} became NaN or infinite (lr={lr:g}); "
                      "they are reset to the identity (the logit lens): lower lr", RuntimeWarning, stacklevel=3)
    return diverged


def lr_at(step: int, steps: int, lr: float, warmup: int = 0) -> float:
    """The learning rate of step `step` (0-based) of `steps`: lr·(step + 1)/warmup over the first
    `warmup` steps, then lr·(steps − step)/(steps − warmup), falling linearly to lr/(steps − warmup)
    at the last step (the tuned-lens library's linear schedule, without its zero-rate step; the
    decay lets the last steps settle rather than oscillate)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * (steps - step) / (steps - warmup)


def held_out_split(count: int, generator: torch.Generator) -> list[int]:
    """The windows (of `count`) training never reads, sorted: a share HELD_OUT of them, at most
    HELD_OUT_MAX, drawn by `generator`; none when that share is under one window."""
    k = min(HELD_OUT_MAX, int(count * HELD_OUT))
    return sorted(torch.randperm(count, generator=generator)[:k].tolist()) if k else []


@torch.no_grad()
def _select(handle: Model, lens: TunedLens, rows: torch.Tensor, layers) -> dict:
    """Each layer's mean KL(p_L ‖ p_l) on the held-out windows rows [k, n] with its translator and
    with the identity (the logit lens); a translator that does not lower it is
    reset to the identity. Returns both KLs per layer and the layers reset."""
    p_final, kept = _frozen(handle, rows, layers)
    with handle.lock:
        tuned, logit = _kl(handle, lens, p_final, kept, layers), _kl(handle, None, p_final, kept, layers)
    reset = [l for l in layers if not tuned[l] < logit[l]]
    for l in reset:
        lens.weight[l].zero_()
        lens.bias[l].zero_()
    return {"kl_logit": {str(l): round(logit[l], 6) for l in layers},
            "kl_tuned": {str(l): round(tuned[l], 6) for l in layers}, "identity_layers": reset}


def _step(handle: Model, lens: TunedLens, rows: torch.Tensor, layers, head_dtype: torch.dtype) -> dict[int, float]:
    """One training step's gradients on the translators of `layers` for windows rows [b, n]
    (set on their .grad), and the mean KL(p_L ‖ p_l) of each layer on them."""
    return _grads(handle, lens, *_frozen(handle, rows, layers), layers, head_dtype)


@torch.no_grad()
def _frozen(handle: Model, rows: torch.Tensor, layers):
    """(p_L [b, n, V] fp32, {layer: lens point [b, n, d]}) of windows rows [b, n], from one
    forward of the frozen model (batched over several steps' windows, its cost per token falls:
    at the mamba-130m shape 44 ms of CPU for 1 × 64 tokens, 6 ms for 16 × 64)."""
    final, kept = residuals(handle, rows, layers)
    return torch.softmax(final.float(), -1), kept


def _grads(handle: Model, lens: TunedLens, p_final: torch.Tensor, kept: dict, layers,
           head_dtype: torch.dtype) -> dict[int, float]:
    """The translators' gradients of Σ_l KL(p_L ‖ p_l) over `layers` (set on their .grad, and
    `kept`'s residuals consumed), and each layer's mean KL.

    Layers are decoded together, as many as make about HEAD_ROWS rows of logits at once (one
    larger matmul streams the unembedding once for all of them), the unembedding under
    autocast in `head_dtype`. The loss is the soft cross-entropy −Σ p_L log p_l =
    logsumexp(z_l) − Σ p_L z_l, which differs from the KL by p_L's entropy, a constant."""
    p = p_final.flatten(0, -2)  # [N, V]
    entropy = -torch.special.xlogy(p, p).sum(-1).mean()
    device, kl, layers = p.device.type, {}, list(layers)
    per = max(1, HEAD_ROWS // len(p))
    with handle.lock, torch.autocast(device, dtype=head_dtype, enabled=head_dtype != torch.float32):
        for chunk in [layers[i:i + per] for i in range(0, len(layers), per)]:
            with torch.autocast(device, enabled=False):
                translated = torch.stack([lens.translate(l, kept.pop(l)).flatten(0, -2) for l in chunk])  # [c, N, d]
            z = handle.arch.head(handle.module, translated)[..., :handle.vocab_size].float()  # [c, N, V]
            cross = torch.logsumexp(z, -1) - torch.einsum("cnv,nv->cn", z, p)
            loss = cross.mean(1)  # [c]
            params = [t for l in chunk for t in (lens.weight[l], lens.bias[l])]
            for param, g in zip(params, torch.autograd.grad(loss.sum(), params)):
                param.grad = g
            kl.update({l: float(value - entropy) for l, value in zip(chunk, loss.detach())})
    return kl


@torch.no_grad()
def _kl(handle: Model, lens: TunedLens | None, p_final: torch.Tensor, kept: dict, layers) -> dict[int, float]:
    """Each layer's mean KL(p_L ‖ p_l) over the tokens of p_final [k, n, V], decoding `kept`'s
    residuals through `lens` (None: as they are, the logit lens) in the model's dtype by
    `lens.decode_layers`, as `logit_lens` decodes, HEAD_ROWS rows at a time."""
    p = p_final.flatten(0, -2)  # [N, V]
    entropy = -torch.special.xlogy(p, p).sum(-1).mean()
    kl = {}
    for l in layers:
        r, cross = kept[l].flatten(0, -2), []
        for i in range(0, len(r), HEAD_ROWS):
            z = decode_layers(handle, {l: r[i:i + HEAD_ROWS]}, lens)[l]
            cross.append(torch.logsumexp(z, -1) - (z * p[i:i + HEAD_ROWS]).sum(-1))
        kl[l] = float(torch.cat(cross).mean() - entropy)
    return kl


# --- saving -------------------------------------------------------------------------------------

def save(lens: TunedLens, directory) -> Path:
    """Write `lens.safetensors` and `lens.json` into `directory` (created); returns it."""
    from safetensors.torch import save_file

    if not isinstance(lens, TunedLens):
        raise ValueError(f"lens: must be a TunedLens (from train_tuned_lens or load), got {type(lens).__name__}")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"directory: {directory} is a file; give a folder (created if absent) for {WEIGHTS} and {META}")
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"{kind}.{l}": getattr(lens, kind)[l].detach().cpu().contiguous()
               for kind in ("weight", "bias") for l in range(lens.n_layers - 1)}
    save_file(tensors, directory / WEIGHTS, metadata={"format": "pt"})
    (directory / META).write_text(json.dumps({
        "source": lens.source, "family": lens.family, "digest": lens.digest, "n_layers": lens.n_layers,
        "d": lens.d, "meta": lens.meta}, indent=2))
    return directory


def load(directory, *, model=None) -> TunedLens:
    """A lens saved by `save`; with `model`, refused unless it is the model the lens was trained for.

    A folder that is not what `save` writes (unreadable JSON, a field missing or of another type,
    a tensor missing, of another shape or not finite, a truncated file) is refused with a
    ValueError naming the file and what it must hold."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / WEIGHTS).is_file() or not (directory / META).is_file():
        raise ValueError(f"directory: {directory} holds no saved tuned lens ({WEIGHTS} and {META})")
    info = _meta(directory / META)
    try:
        tensors = load_file(directory / WEIGHTS)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"directory: {directory / WEIGHTS} is not a readable safetensors file ({err}); "
                         "save the lens again") from None
    n, d = info["n_layers"], info["d"]
    shapes = {f"{kind}.{l}": (d, d) if kind == "weight" else (d,) for kind in ("weight", "bias") for l in range(n - 1)}
    missing, extra = sorted(set(shapes) - set(tensors)), sorted(set(tensors) - set(shapes))
    if missing or extra:
        raise ValueError(f"directory: {directory / WEIGHTS} must hold weight.l [{d}, {d}] and bias.l [{d}] for "
                         f"l in 0..{n - 2} (n_layers = {n}, d = {d} in {META}); "
                         + (f"missing {missing[:4]}" if missing else f"it also holds {extra[:4]}"))
    for name, shape in shapes.items():
        t = tensors[name]
        fits = tuple(t.shape) == shape and t.dtype.is_floating_point
        if not fits or not torch.isfinite(t).all():
            raise ValueError(f"directory: {directory / WEIGHTS}'s {name} must be a finite float tensor of shape "
                             f"{list(shape)} (d = {d} in {META}), got {t.dtype} {list(t.shape)}"
                             f"{'' if not fits else ' with NaN or inf'}")
    lens = TunedLens(info["source"], info["family"], info["digest"], n, d, info["meta"])
    with torch.no_grad():
        for kind in ("weight", "bias"):
            for l in range(n - 1):
                getattr(lens, kind)[l].copy_(tensors[f"{kind}.{l}"])
    lens.requires_grad_(False)
    if model is not None:
        handle = handle_of(model)
        lens.check(handle, "model")
        lens.to(handle.device)
    return lens


META_FIELDS = {"source": str, "family": str, "digest": str, "n_layers": int, "d": int, "meta": dict}


def _meta(path: Path) -> dict:
    """lens.json as `save` writes it, checked field by field; ValueError names the file and the field."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"directory: {path} is not the JSON that save writes ({err})") from None
    wanted = ", ".join(f"{key} ({kind.__name__})" for key, kind in META_FIELDS.items())
    if not isinstance(info, dict):
        raise ValueError(f"directory: {path} must be a JSON object with {wanted}, got a {type(info).__name__}")
    for key, kind in META_FIELDS.items():
        value = info.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or kind is int and value < 1:
            raise ValueError(f"directory: {path}'s {key!r} must be {'an integer ≥ 1' if kind is int else 'a ' + kind.__name__}"
                             f" (it holds {wanted}), got {value!r}")
    return info
