"""Mamba's hidden attention (Ali, Zimerman & Wolf 2024), beside a transformer's head patterns.

Unrolling the selective scan h_t = Ā_t ⊙ h_{t-1} + B̄_t x_t (`compare.ssm.scan`, per channel c of
d_in, state size n) gives, for every channel,

    y_t = Σ_{s ≤ t} α[t, s] · x_s + D ⊙ x_t,
    α[t, s] = Σ_n C_t[n] · (Π_{k=s+1..t} Ā_k[c, n]) · B̄_s[c, n]        (0 for s > t)

so α is a causal T × T matrix per channel that plays the role of an attention pattern, except
that it is not normalised and may be negative. `hidden_attention` computes it from the model's
own Δ, B, C, x of one layer (read in one plain forward; Ā = exp(Δ·A) and B̄ = Δ·B by
`scan.discretise`, as the model's scan does) by the same recurrence, M_t = Ā_t ⊙ M_{t-1} with
M_t[t] = B̄_t, so that Σ_s α[t, s] x_s + D x_t reconstructs the model's y to fp32 rounding
(`terms` returns the pieces; tests hold it to 1e-5).

Memory: α over C channels holds T² × C fp32 values (T = 1024 over mamba-130m's 1536 channels:
6 GiB), and computing it costs T² × C × n multiply-adds; beyond ``max_bytes`` (default 1 GiB)
the call is refused before any compute, naming the estimate: pick fewer `channels` or a
shorter prompt. The working state M is T × C × n values.

`head_pattern` reads a transformer's attention probabilities (the `pattern` point) in the same
form, and `attention_map` picks whichever the model has, so the two can be shown side by side.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..base import memory
from ..base.hooks import temporary_hooks
from ..handle.model import Model
from ..handle.inputs import byte_budget, is_int, prompt_ids
from ..engine.convention import analysis
from ..ssm.scan import alpha_of  # noqa: F401  (α's recurrence lives with the scan; imported here as before)

REDUCES = ("mean", "abs_mean", "none")
MAX_BYTES = 2**30
FP32_BYTES = 4


@dataclass(frozen=True)
class AttentionMap:
    """One layer's token-to-token weights: weights[t, s], how much position s feeds position t.

    weights: [T, T] when reduced over channels (heads), else [C, T, T] in the order of `units`.
    kind: "hidden attention" (Mamba's α, unnormalised, signed) or "pattern" (softmax probabilities).
    units: the channels (hidden attention) or heads (pattern) included.
    """
    model: str
    layer: int
    kind: str
    tokens: list[str]
    weights: np.ndarray
    units: tuple[int, ...]
    reduce: str


@analysis
def hidden_attention(prompt, *, model, layer, channels=None, reduce="mean", max_bytes: int = MAX_BYTES) -> AttentionMap:
    """Mamba's implicit attention α[t, s] at `layer` (module docstring), per channel or reduced.

    prompt: text or token IDs [T]. model: a `Model` with a selective SSM or a source for
    `load_model`, or a list of them (then a list of maps, one per model); dtype, device, progress,
    stop: the calling convention (`engine.convention`). channels: the d_in channels to include (default all). reduce: "mean" over the
    channels (signed), "abs_mean" (mean of |α|), or "none" for the [C, T, T] array.
    Refused beyond ``max_bytes`` for the T² × C array (module docstring).
    """
    handle = model  # one loaded handle (`engine.convention`)
    ids = prompt_ids(handle, prompt)
    reduce = _reduce(reduce)
    max_bytes = byte_budget(max_bytes)
    t = terms(handle, ids, layer=layer, channels=channels, max_bytes=max_bytes)
    alpha = t["alpha"]
    weights = {"mean": lambda a: a.mean(0), "abs_mean": lambda a: a.abs().mean(0), "none": lambda a: a}[reduce](alpha)
    return AttentionMap(handle.name, layer, "hidden attention", handle.decode_tokens(ids[0].tolist()),
                        weights.numpy(), t["channels"], reduce)


@torch.no_grad()
def terms(handle: Model, ids: torch.Tensor, *, layer, channels=None, max_bytes: int = MAX_BYTES) -> dict:
    """α [C, T, T] and what reconstructs y with it: x [T, C], D [C], and the model's own y [T, C].

    y_t = Σ_s α[:, t, s] · x_s + D · x_t holds to fp32 rounding (`reconstruct`).
    """
    arch = handle.arch
    _layer(handle, layer)
    _mixes_positions(handle, layer)
    if not arch.mixes(handle.module, layer, "ssm"):
        raise ValueError(f"{handle.name}: hidden attention needs a selective SSM; {arch.title} mixes positions by "
                         f"attention at layer {layer}: read its heads with head_pattern")
    missing = [p for p in arch.attention_points if p not in arch.points_at(handle.module, layer)]
    if missing or not arch.attention_points:
        raise ValueError(f"{handle.name}: layer {layer} is an {handle.layer_kind(layer)} layer, but {arch.title} lacks "
                         f"the points hidden attention reads there ({', '.join(missing) or 'none declared'})")
    channels = _units(channels, arch.dims(handle.module.config)[arch.attention_units], "channels")
    T = ids.shape[1]
    need = FP32_BYTES * T * T * len(channels)
    if need > max_bytes:
        raise ValueError(f"{handle.name}: hidden attention over {len(channels)} channels of a {T}-token prompt holds "
                         f"T² × channels = {T * T * len(channels):,} values ({_size(need)}), more than "
                         f"max_bytes ({_size(max_bytes)}); pick fewer channels or a shorter prompt")
    memory.check_fits(need + FP32_BYTES * T * len(channels) * arch.dims(handle.module.config)["n"],
                      f"hidden attention over {len(channels)} channels × {T} tokens", "pick fewer channels")
    seen = read_points(handle, ids, layer, arch.attention_points)
    alpha, x, D, y = arch.hidden_attention_terms(handle.module, layer, seen, torch.tensor(channels))
    return {"alpha": alpha.cpu(), "x": x.cpu(), "D": D.cpu(), "y": y.cpu(), "channels": channels}


def reconstruct(alpha: torch.Tensor, x: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """y [T, C, ...] = Σ_s α[:, t, s] x_s + D ⊙ x_t from `terms`' pieces (Mamba-2's units are
    heads, each with headdim channels after it)."""
    return torch.einsum("cts,sc...->tc...", alpha, x) + D.reshape(D.shape + (1,) * (x.dim() - 2)) * x


@analysis
def head_pattern(prompt, *, model, layer, heads=None, reduce="mean") -> AttentionMap:
    """A transformer's attention probabilities at `layer` (the `pattern` point), in `AttentionMap`
    form: heads (default all), reduce "mean" over them, "abs_mean" (the same: they are ≥ 0), or "none"."""
    handle = model  # one loaded handle (`engine.convention`)
    ids = prompt_ids(handle, prompt)
    reduce = _reduce(reduce)
    _layer(handle, layer)
    _mixes_positions(handle, layer)
    if "pattern" not in handle.arch.points_at(handle.module, layer):
        raise ValueError(f"{handle.name}: layer {layer} of {handle.arch.title} has no attention pattern; "
                         "use hidden_attention for a selective SSM")
    heads = _units(heads, handle.arch.dims(handle.module.config)["heads"], "heads")
    pattern = read_points(handle, ids, layer, ("pattern",))["pattern"][0][list(heads)].float().cpu()  # [H, T, T]
    weights = pattern if reduce == "none" else pattern.mean(0)
    return AttentionMap(handle.name, layer, "pattern", handle.decode_tokens(ids[0].tolist()), weights.numpy(),
                        tuple(heads), reduce)


@analysis
def attention_map(prompt, *, model, layer, units=None, reduce="mean", max_bytes: int = MAX_BYTES) -> AttentionMap:
    """Whichever map the model has: Mamba's hidden attention over channels `units`, or the heads
    `units` of a transformer's pattern. A list of models gives a list of maps (`engine.convention`)."""
    handle = model  # one loaded handle (`engine.convention`)
    max_bytes = byte_budget(max_bytes)  # checked for a transformer too, which has no use for it
    _layer(handle, layer)
    if not handle.arch.mixes(handle.module, layer, "attention"):  # an SSM layer (Falcon-H1's show their heads)
        return hidden_attention(prompt, model=handle, layer=layer, channels=units, reduce=reduce, max_bytes=max_bytes)
    return head_pattern(prompt, model=handle, layer=layer, heads=units, reduce=reduce)


@torch.no_grad()
def read_points(handle: Model, ids: torch.Tensor, layer: int, names) -> dict[str, torch.Tensor]:
    """Copies of the points `names` at `layer` from one plain forward, read by torch hooks
    while this call holds the model's lock."""
    seen = {}
    with handle.lock:
        with temporary_hooks(*[handle.arch.hook(handle.module, name, layer,
                                                lambda v, name=name: seen.__setitem__(name, v.detach().clone()))
                               for name in names]):
            handle.logits(ids)
    return seen


def _layer(handle: Model, layer) -> None:
    if not is_int(layer) or not 0 <= layer < handle.n_layers:
        raise ValueError(f"{handle.name}: layer must be an int in 0..{handle.n_layers - 1}, got {layer!r}")


def _mixes_positions(handle: Model, layer: int) -> None:
    """Refuse a layer that mixes no positions (Nemotron-H's MLP and MoE layers): it has neither map."""
    arch, module = handle.arch, handle.module
    mixing = [l for l in range(handle.n_layers) if arch.mixes(module, l, "ssm") or arch.mixes(module, l, "attention")]
    if layer not in mixing:
        raise ValueError(f"{handle.name}: layer {layer} is an {handle.layer_kind(layer)} layer, which mixes no "
                         f"positions: it has no attention pattern and no hidden attention; the layers that mix "
                         f"positions are {mixing}")


def _units(values, size: int, name: str) -> tuple[int, ...]:
    if values is None:
        return tuple(range(size))
    values = [values] if isinstance(values, (int, np.integer)) else values
    try:
        values = list(values)
    except TypeError:
        raise ValueError(f"{name} must be ints in 0..{size - 1} or None for all, got {values!r}") from None
    if not values or not all(is_int(v) and 0 <= v < size for v in values):
        raise ValueError(f"{name} must be a non-empty list of ints in 0..{size - 1} or None for all, got {values!r}")
    return tuple(dict.fromkeys(int(v) for v in values))


def _reduce(reduce) -> str:
    reduce = "none" if reduce is None else reduce
    if reduce not in REDUCES:
        raise ValueError(f"reduce must be one of {REDUCES} (None means 'none'), got {reduce!r}")
    return reduce


def _size(n: int) -> str:
    return memory.size_text(n) if n >= 2**20 else f"{n:,} bytes"
