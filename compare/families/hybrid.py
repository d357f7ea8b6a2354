"""What the hybrid adapters (`granite_hybrid`, `falcon_h1`) share: transformers' module tree with
hook points added where module inputs and outputs do not reach, and a forward that runs each
layer with the arguments its kind needs.

Attention: q, k, v and pattern are `HookPoint`s called by the attention function registered
with transformers' `AttentionInterface` as `ATTENTION` ("compare_hooked_gqa"): transformers'
eager attention with grouped-query heads, line for line, that passes q and k (after rotary and
any key multiplier), v (before its heads are repeated for the query groups) and the
probabilities through the hook points before using them. q is [b, l, d_q] (d_q = heads · head),
k and v are [b, l, d_kv] (d_kv = kv_heads · head), heads concatenated.

Mamba-2 mixer (SSD; Dao & Gu 2024), in the glossary of `compare.ssm.mamba` plus H SSM heads of p
channels (d_in = H · p) and g groups of B and C (the letter is H, not `heads`, which in a hybrid
counts the attention heads): the mixer's class is swapped for a subclass whose forward, for a
forward without cache, is transformers' own, step for step and with its own functions
(`causal_conv1d_forward`) but for the scan (below), with hook points on
    gate        z, the gate part of in_proj                       [b, l, d_in]
    x           after the causal conv and SiLU, split into heads  [b, l, H, p]
    B, C        after the conv and SiLU, per group                [b, l, g, n]
    dt          Δ = clamp(softplus(dt + dt_bias)), one per head   [b, l, H]
    y           the scan's output, the skip D · x included        [b, l, H, p]
    gated_norm  y gated by SiLU(z) (and normed, where the model norms), entering out_proj  [b, l, d_in]
(the names and layouts of the Mamba-2 family's points). While something reads or edits one of
    A_bar       Ā = exp(Δ · A), one decay per head and position       [b, l, H]
    write       w = Δ · x ⊗ B, what enters the state                 [b, l, H, p, n]
    h           h_t = Ā_t h_{t-1} + w_t, the carried state            [b, l, H, p, n]
    h_readout   h_t as C reads it out                                 [b, l, H, p, n]
(`HookPoint.requested`), the state is materialised as the Mamba-2 family's is, by the same
function (`compare.ssm.mamba2.materialised_ssd`), and y = C · h_readout + D · x: an edit of h
enters the recurrence (every later position changes, none before), one of h_readout changes y at
the edited positions only. Otherwise y is the chunked scan of `compare.ssm.ssd` (chunks of the
model's chunk_size, at most `ssd.CHUNK`), the form transformers' torch path computes, with C Bᵀ
taken once per group of B and C rather than once per head: the same y within fp32 rounding,
several times faster at Granite-4.0-H-350M's width on a CPU (benchmarks/bench_hybrids.py). A
forward with a cache (generation) runs transformers' forward unchanged, without these points.
Noise or a patch on h, h_readout, write or B changes y linearly (`Point.into_y`, as in Mamba-2):
the sweeps compute y's change (`HybridFamily.noise_into_y`, `ssd.increment_into_y`) and finish
the block from y (`block_from_y`) instead of running the noised block, and its state, per run.

The LM head is replaced by `ScaledHead`, which applies the model's logit multiplier itself, so
that the `logits` point (its output) is the model's logits; the model's own multiplier is set
to 1 (Granite's `config.logits_scaling`, Falcon-H1's `model.lm_head_multiplier`).
"""
from __future__ import annotations

import importlib
import re

import torch
from torch import nn

from ..base import checkpoint
from ..base.checkpoint import ModelLoadError
from ..base.hooks import HookPoint, temporary_hooks
from ..ssm.mamba import conv_silu
from ..ssm.mamba2 import materialised_ssd
from ..ssm.ssd import CHUNK, attention_terms, increment_into_y, ssd_scan
from .base import Point, TransformersFamily, _walk, from_state_dict
from .hybrid_suffix import (Prefix, Suffixes, causal_mask, gated_norm, in_projection, mixer_output, mixer_suffix,
                            scan_inputs)

ATTENTION = "compare_hooked_gqa"
ATTENTION_POINTS = ("q", "k", "v", "pattern")
STATE_POINTS = ("A_bar", "write", "h", "h_readout")  # materialised only when requested
SSM_POINTS = ("gate", "x", "B", "C", "dt", "y", "gated_norm") + STATE_POINTS
PATTERN_REFUSED = ("'pattern' is [b, heads, l, l]: noise is drawn per position along the second axis, which "
                   "is heads here; edit it in a trace instead")


def ssd_points(mixer: str, *, gated_norm_affine: bool = False) -> tuple[Point, ...]:
    """The hooked Mamba-2 mixer's points (`hook_mixer`) at module path `mixer` ("...{l}..."), all of
    kind "ssm"; B and the state points change y linearly (`Point.into_y`: noise and patches restart
    from y). gated_norm_affine: the block's output is affine in gated_norm (no norm after the mixer)."""
    def ssm(name, shape, **kw):
        return Point(name, f"{mixer}.hook_{name}", shape, kinds=("ssm",), **kw)
    state = "[b, l, H, p, n]"
    return (ssm("gate", "[b, l, d_in]"), ssm("x", "[b, l, H, p]"), ssm("B", "[b, l, g, n]", into_y=True),
            ssm("C", "[b, l, g, n]"), ssm("dt", "[b, l, H]"), ssm("A_bar", "[b, l, H]", ssm=True),
            ssm("write", state, ssm=True, into_y=True), ssm("h", state, ssm=True, into_y=True),
            ssm("h_readout", state, ssm=True, into_y=True), ssm("y", "[b, l, H, p]"),
            ssm("gated_norm", "[b, l, d_in]", affine=gated_norm_affine))


def attention_points(attention: str, *, affine: bool = False) -> tuple[Point, ...]:
    """The hooked attention's points (`hook_attention`) at module path `attention`, all of kind
    "attention"; affine: the block's output is affine in z and attn_out."""
    def att(name, path, shape, **kw):
        return Point(name, path, shape, kinds=("attention",), **kw)
    return (att("q", f"{attention}.hook_q", "[b, l, d_q]"), att("k", f"{attention}.hook_k", "[b, l, d_kv]"),
            att("v", f"{attention}.hook_v", "[b, l, d_kv]"),
            att("pattern", f"{attention}.hook_pattern", "[b, heads, l, l]", refused=PATTERN_REFUSED, patchable=False),
            att("z", f"{attention}.o_proj", "[b, l, d_q]", io="input", affine=affine),
            att("attn_out", attention, "[b, l, d]", item=0, affine=affine))


class HybridFamily(TransformersFamily):
    """A transformers hybrid: per-layer kinds from its config, hook points added at build."""

    attention = ATTENTION
    mixer_name = "mamba"  # the attribute of a layer holding its Mamba-2 mixer
    attention_units = "H"  # hidden attention is per SSM head (one scalar decay each), as Mamba-2's
    attention_points = ("x", "B", "C", "dt", "y")
    suffix = True  # `block_suffix`: a block runs on positions p.. from a recorded prefix

    def ssm_parameters(self, module, layer):
        """(A [H], D [H]) of layer `layer`'s Mamba-2 mixer: one scalar per head."""
        mixer = getattr(self.blocks(module)[layer], self.mixer_name)
        return -torch.exp(mixer.A_log.float()), mixer.D.float()

    def hidden_attention_terms(self, module, layer, seen, units):
        """Per SSM head: α[t, s] = C_t · B_s · Π_{k=s+1..t} Ā_k · Δ_s (`ssd.ssd_attention`)."""
        return attention_terms(*self.ssm_parameters(module, layer), seen, units)

    into_y_points = ("dt", "x", "C", "gate", "y")

    def noise_into_y(self, module, layer, component, terms, positions, values):
        """Δy [R, T, H, p] for values [R, P, H, p, n] added to h, write or h_readout, or [R, P, g, n]
        added to B, at `positions`: y is linear in each, as in Mamba-2 (`ssd.increment_into_y`)."""
        dt, x, C = (terms[name] for name in ("dt", "x", "C"))
        return increment_into_y(component, self.ssm_parameters(module, layer)[0], dt, x, C, positions, values)

    def block_from_y(self, module, layer, terms, resid, y):
        """Block `layer`'s output [R, T, d] for its Mamba-2 mixer's y [R, T, H, p]: transformers' block
        run once on the clean resid [1, T, d] with the mixer's output replaced by the gated norm and
        out_proj of y, with the clean gate (`hybrid_suffix.mixer_output`). The block's residual add
        broadcasts it to R rows and what follows the mixer (Granite's and Falcon-H1's MLP, their μP
        and residual multipliers) runs on them; what runs beside the mixer on the same normed input
        (Falcon-H1's attention, which noise in the SSM branch does not reach) runs once, on the
        clean row. The mixer's own forward of that row is computed and discarded."""
        mixer = getattr(self.blocks(module)[layer], self.mixer_name)
        out = mixer_output(mixer, y.flatten(-2), terms["gate"])
        with temporary_hooks(mixer.register_forward_hook(lambda *_: out)):
            return self.blocks_from(module, layer, resid, None, stop=layer + 1)

    def layer_kinds(self, module):
        return self.kinds_of(module.config)

    def kinds_of(self, config) -> tuple[str, ...]:
        """The kind of each layer from a loaded model's config."""
        raise NotImplementedError

    def layer_kwargs(self, module, resid: torch.Tensor, layer: int, start: int | Suffixes = 0) -> dict:
        """The keyword arguments of block `layer` in a forward without cache on `resid` [b, l, d],
        positions start..start+l-1 (start > 0: a suffix whose keys before `start` a cache supplies;
        `hybrid_suffix.Suffixes`: packed suffixes, [1, N, d], `block_suffix`)."""
        raise NotImplementedError

    def check_layers(self, config: dict, state: dict, path) -> None:
        """Refuse weights whose layers are not of the kinds config.json declares, naming the layer."""
        raise NotImplementedError

    def scale_head(self, module) -> ScaledHead:
        """The LM head with the model's logit multiplier, the model's own set to 1."""
        raise NotImplementedError

    def blocks_from(self, module, start, resid, entry, stop=None, last_only=False):
        blocks = self.blocks(module)
        for i in range(start, len(blocks) if stop is None else stop):
            out = blocks[i](resid, **self.layer_kwargs(module, resid, i))
            resid = out[0] if isinstance(out, tuple) else out
        return resid

    def record_prefix(self, module, layer, resid):
        """Block `layer`'s `hybrid_suffix.Prefix` from one full run on resid [1, T, d]."""
        return Prefix.record(self.blocks(module)[layer], resid, self.layer_kwargs(module, resid, layer))[1]

    def block_suffix(self, module, layer, prefix, pieces):
        """Block `layer`'s outputs on pieces [(p, rows [R, T − p, d])] (`hybrid_suffix`): transformers'
        block on the rows packed along positions, the packing its cache and attention's mask."""
        suffixes = Suffixes(prefix, [(p, len(rows)) for p, rows in pieces])
        rows = suffixes.pack([rows for _, rows in pieces])
        out = self.blocks(module)[layer](rows, cache=suffixes, **self.layer_kwargs(module, rows, layer, start=suffixes))
        return suffixes.unpack(out[0] if isinstance(out, tuple) else out)

    def head(self, module, resid, columns=None):
        logits = super().head(module, resid, columns)
        if columns is None or not isinstance(module.lm_head, ScaledHead):  # the full head scales itself
            return logits
        return module.lm_head.scale(logits)

    def stages(self, module, ids):
        resid, _, _ = self.embed(module, ids)
        yield "the embedding", resid
        L = self.n_layers(module)
        for i in range(L):
            resid = self.blocks_from(module, i, resid, None, stop=i + 1)
            yield f"layer {i} (of {L}, {self.layer_kind(module, i)})", resid
        resid = _walk(module, self.norm_path)(resid)
        yield "the final norm", resid
        yield "the LM head", module.lm_head(resid)

    def build(self, directory, config):
        checkpoint.check_memory(self.parameter_count(config, directory), directory)
        path, state = checkpoint.read_weights(directory, ignored=self.ignored)
        self.check_layers(config, state, path)
        register_attention()
        import transformers

        config_class, model_class = (getattr(transformers, name) for name in self.classes)
        module = from_state_dict(model_class, config_from_file(config_class, directory), state, path, self.attention)
        module.config.use_cache = False  # a plain forward keeps no cache (the sweeps rerun blocks)
        module.lm_head = self.scale_head(module)
        for block in self.blocks(module):
            self.hook_block(block)
        return module

    def hook_block(self, block: nn.Module) -> None:
        """Add the hook points to one layer: its attention (`self_attn`) and its Mamba-2 mixer (`mixer_name`),
        where it has them."""
        attention = getattr(block, "self_attn", None)
        if attention is not None:
            hook_attention(attention)
        mixer = getattr(block, self.mixer_name, None)
        if mixer is not None:
            hook_mixer(mixer)


def config_from_file(config_class, directory):
    """transformers' config from config.json by its public reader, which decodes the non-finite floats
    transformers writes as objects (time_step_limit's upper bound, {"__float__": "Infinity"})."""
    try:
        return config_class.from_json_file(directory / "config.json")
    except (TypeError, ValueError) as err:
        raise ModelLoadError(f"{directory / 'config.json'}: transformers refuses this {config_class.__name__}: "
                             f"{err}") from None


class ScaledHead(nn.Linear):
    """The LM head times `multiplier`, divided by `divisor` (each exact where it is 1); its weight
    is the head's own Parameter, so a tie to the embedding stays a tie."""

    def __init__(self, head: nn.Linear, *, multiplier: float = 1.0, divisor: float = 1.0):
        super().__init__(head.in_features, head.out_features, bias=False, device="meta")
        self.weight = head.weight
        self.multiplier, self.divisor = float(multiplier), float(divisor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(nn.functional.linear(x, self.weight))

    def scale(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits of the unscaled head times multiplier / divisor, in place ([b, l, V]: V is
        large), and only where needed."""
        if self.multiplier != 1.0:
            logits.mul_(self.multiplier)
        if self.divisor != 1.0:
            logits.div_(self.divisor)
        return logits


def attention_kwargs(resid: torch.Tensor, start: int | Suffixes = 0) -> dict:
    """The mask `hooked_attention` gets from transformers without padding: None (causal); for
    positions start.. of a suffix [1, 1, l, start + l], added to the scores, query i seeing keys
    0..start+i (`hybrid_suffix.causal_mask`); for packed suffixes, the packing."""
    if isinstance(start, Suffixes):
        return {"attention_mask": start}
    return {"attention_mask": causal_mask(resid.shape[1], start, resid.dtype, resid.device)}


def rotary(rotary_emb: nn.Module, resid: torch.Tensor, start: int | Suffixes = 0):
    """(cos, sin) of positions start..start+l-1 (or of each packed position), as the model computes them without cache."""
    positions = (start.positions(resid.device) if isinstance(start, Suffixes)
                 else torch.arange(start, start + resid.shape[1], device=resid.device)[None])
    return rotary_emb(resid, positions)


def register_attention() -> None:
    """Register `hooked_attention` (and transformers' SDPA mask for it) as `ATTENTION`; idempotent.
    The SDPA mask is None where the plain causal mask would be (no padding, as many queries as
    keys), so that SDPA runs its causal kernel on the key/value heads (`hooked_attention`)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, hooked_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def hooked_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """transformers' eager attention (grouped-query) with q, k, v [b, heads, l, head] and the
    probabilities passed through the module's hook points (q, k, v as [b, l, ·], heads concatenated).
    While nothing reads or edits the pattern (`HookPoint.requested`), transformers' SDPA attention
    runs instead: the same sums without the [b, heads, l, l] scores in memory; with no mask (None:
    the plain causal one, `register_attention`) SDPA masks causally itself and runs on the key/value
    heads (is_causal, enable_gqa; 4× faster again at 1,024 positions on a CPU than with the mask
    tensor and the heads repeated). q, k and v are laid out for their points only while they are
    requested. The mask is None (causal, as many queries as keys), boolean (True: attend; padding
    or an edge `mask_edges` cut), additive (finfo.min: masked; `attention_kwargs`) or the packing of
    rows run on suffixes (`hybrid_suffix.Suffixes.attend`, no hook points)."""
    if isinstance(attention_mask, Suffixes):
        return attention_mask.attend(module, query, key, value, scaling, dropout)
    def hooked(name, x):  # [b, heads, l, head] -> hook on [b, l, heads·head] -> back, a view of the hook's output
        point = getattr(module, f"hook_{name}")
        if not point.requested():
            return x
        b, heads, T, head = x.shape
        flat = point(x.transpose(1, 2).reshape(b, T, heads * head))
        return flat.view(b, T, heads, head).transpose(1, 2)

    query, key, value = hooked("q", query), hooked("k", key), hooked("v", value)
    if not module.hook_pattern.requested():
        from transformers import AttentionInterface

        return AttentionInterface()["sdpa"](module, query, key, value, attention_mask, dropout=dropout,
                                            scaling=scaling, **kwargs)
    groups = module.num_key_value_groups
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is None:  # causal: query i of the last T of S positions sees keys 0..S-T+i
        T, S = scores.shape[-2:]
        attention_mask = torch.full((T, S), torch.finfo(scores.dtype).min, device=scores.device,
                                    dtype=scores.dtype).triu(S - T + 1)
    elif attention_mask.dtype == torch.bool:  # as transformers' `eager_mask` makes it of the same
        attention_mask = torch.zeros((), dtype=scores.dtype).masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    scores = scores + attention_mask
    pattern = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    pattern = module.hook_pattern(pattern)
    pattern = torch.nn.functional.dropout(pattern, p=dropout, training=module.training)
    return torch.matmul(pattern, value).transpose(1, 2).contiguous(), pattern


def hook_attention(attention: nn.Module) -> None:
    """Give a transformers attention module run by `hooked_attention` its q, k, v and pattern hook points."""
    for name in ATTENTION_POINTS:
        setattr(attention, f"hook_{name}", HookPoint())


def hook_mixer(mixer: nn.Module) -> None:
    """Give a transformers Mamba-2 mixer the SSD hook points: its class becomes a subclass with
    `ssd_forward` as forward (module docstring)."""
    cls = type(mixer)
    hooked = _HOOKED.get(cls)
    if hooked is None:
        hooked = _HOOKED[cls] = type(f"Hooked{cls.__name__}", (cls,), {"forward": mixer_forward})
    mixer.__class__ = hooked
    for name in SSM_POINTS:
        setattr(mixer, f"hook_{name}", HookPoint())


_HOOKED: dict[type, type] = {}


def mixer_forward(self, hidden_states: torch.Tensor, cache=None, attention_mask=None, **kwargs) -> torch.Tensor:
    """The hooked mixer's forward: `ssd_forward`, or with `hybrid_suffix.Suffixes` as cache the
    packed suffixes its caller runs (`HybridFamily.block_suffix`)."""
    if isinstance(cache, Suffixes):
        return mixer_suffix(self, hidden_states, cache)
    return ssd_forward(self, hidden_states, cache=cache, attention_mask=attention_mask, **kwargs)


def ssd_forward(self, hidden_states: torch.Tensor, cache=None, attention_mask=None, **kwargs) -> torch.Tensor:
    """transformers' Mamba-2 mixer forward without cache (GraniteMoeHybridMambaLayer, FalconH1Mixer),
    with the hook points of the module docstring."""
    if cache is not None or self.training:
        return super(type(self), self).forward(hidden_states, cache=cache, attention_mask=attention_mask, **kwargs)
    ops = importlib.import_module(type(self).__mro__[1].__module__)
    dtype = hidden_states.dtype
    hidden_states = ops.apply_mask_to_padding_states(hidden_states, attention_mask)
    gate, xBC, dt = in_projection(self, hidden_states)
    if self.activation in ("silu", "swish") and xBC.dtype == torch.float32:
        xBC = conv_silu(xBC, self.conv1d.weight, self.conv1d.bias)  # [b, l, ·] as it is: no transposes
    else:
        xBC = ops.causal_conv1d_forward(self.conv1d, xBC.transpose(1, 2), None, self.layer_idx,
                                        activation=self.activation).transpose(1, 2)
    xBC = ops.apply_mask_to_padding_states(xBC, attention_mask)
    x, B, C, delta = scan_inputs(self, xBC, dt)
    b, T = x.shape[:2]
    gate = self.hook_gate(gate)
    x, B, C, delta = self.hook_x(x), self.hook_B(B), self.hook_C(C), self.hook_dt(delta)
    A = -torch.exp(self.A_log.float())
    if any(getattr(self, f"hook_{name}").requested() for name in STATE_POINTS):  # in fp32, as transformers' scan
        y = materialised_ssd(self, x.float(), delta.float(), A, B.float(), C.float(), self.D.float())
    else:
        y = ssd_scan(x, delta, A, B, C, self.D, chunk=min(self.chunk_size, CHUNK))
    y = self.hook_y(y).reshape(b, T, self.intermediate_size)
    return self.out_proj(self.hook_gated_norm(gated_norm(self, y, gate)).to(dtype))


def mamba2_count(d: int, d_in: int, H: int, gn: int, k: int, *, proj_bias: bool, conv_bias: bool, out_bias: bool,
                 norm: bool) -> int:
    """Parameters of one transformers Mamba-2 mixer: in_proj (z, x, B, C, dt), conv1d over x, B, C,
    dt_bias, A_log, D, the gated norm's weight (where it has one), out_proj."""
    conv_dim = d_in + 2 * gn
    proj = 2 * d_in + 2 * gn + H
    return (d * proj + (proj if proj_bias else 0) + conv_dim * k + (conv_dim if conv_bias else 0) + 3 * H
            + (d_in if norm else 0) + d_in * d + (d if out_bias else 0))


def attention_count(d: int, heads: int, kv_heads: int, head: int, *, bias: bool) -> int:
    """Parameters of one grouped-query attention: q, k, v, o projections."""
    dq, dkv = heads * head, kv_heads * head
    return d * (dq + 2 * dkv) + dq * d + ((dq + 2 * dkv + d) if bias else 0)


def attention_values(dims: dict, T: int) -> int:
    """Rough count of the values one grouped-query attention keeps alive on T positions, one batch item:
    its projections, the probabilities and their scores ([heads, T, T], three copies)."""
    return T * (6 * dims["d"] + 3 * dims["d_q"] + 2 * dims["d_kv"]) + 3 * dims["heads"] * T * T


def mamba2_values(dims: dict, T: int, chunk: int, *, ssm: bool = False) -> int:
    """Rough count of the values one Mamba-2 mixer keeps alive on T positions, one batch item: in_proj's
    output and its pieces, the chunked scan's decay blocks [chunk, chunk] per head and its states; with
    `ssm`, the materialised w and h, h's copy and increment for an edit, its rescan and the read-out too."""
    d_in, H, n = dims["d_in"], dims["H"], dims["n"]
    values = T * (3 * (2 * d_in + 2 * dims["gn"] + H) + 4 * d_in) + 3 * T * chunk * H + 2 * (T // chunk + 2) * d_in * n
    return values + (6 * T * d_in * n if ssm else 0)


def kind_of_weights(state: dict, prefix: str, attention: str, mixer: str) -> str:
    """The kind(s) of the layer whose tensors start with `prefix`, read off the weights' names."""
    kinds = [kind for kind, name in (("attention", attention), ("ssm", mixer))
             if any(key.startswith(f"{prefix}{name}.") for key in state)]
    return "+".join(kinds) or "neither"


def refuse_beyond(state: dict, prefix: str, n_layers: int, path, where: str) -> None:
    """Refuse weights of a layer past the `n_layers` that config.json declares (they would be dropped
    unread, leaving a shorter model than the checkpoint), naming the first such layer."""
    extra = sorted({int(m.group(1)) for key in state if (m := re.match(rf"{re.escape(prefix)}(\d+)\.", key))
                    and int(m.group(1)) >= n_layers})
    if extra:
        raise ModelLoadError(f"{path}: the weights hold layer {extra[0]}, but {where} declares {n_layers} "
                             f"layer{'s' if n_layers != 1 else ''} (0..{n_layers - 1}); the config's layer pattern "
                             "does not match these weights")


def refuse_layer(path, layer: int, declared: str, found: str, where: str) -> None:
    raise ModelLoadError(f"{path}: layer {layer} is {declared} in {where}, but the weights hold "
                         f"{'no attention and no Mamba-2 mixer' if found == 'neither' else found} for it; "
                         "the config's layer pattern does not match these weights")
