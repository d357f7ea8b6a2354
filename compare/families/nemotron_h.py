"""Nemotron-H (NVIDIA; transformers' `NemotronHForCausalLM`, model_type "nemotron_h"): a stack of
single-mixer layers, each `resid_post = resid_pre + mixer(norm(resid_pre))`, where the mixer is one
of four kinds, as config.json's `hybrid_override_pattern` spells it one character a layer (or
`layers_block_type` lists it):
    M  a Mamba-2 mixer (`hybrid`'s hooked SSD mixer)   kind "ssm"        mixes positions by a state
    *  grouped-query attention, no positional encoding  kind "attention"  mixes positions by attention
    -  an MLP (up, ReLU², down)                          kind "mlp"        mixes no positions
    E  a mixture of experts plus a shared MLP            kind "moe"        mixes no positions
(the 4B and 8B checkpoints: Mamba-2 and MLP layers alternating, four attention layers among them;
the MoE layers come with the Nemotron 3 checkpoints). Unlike Granite-4.0-H and Falcon-H1, the MLP
is a layer of its own, not a second half of every layer: half the layers move no information
between positions, and the analyses see that from the kind alone (knockout blocks nothing there,
`attention_map` refuses them, sweeps over a mixer's point skip them).

Points per layer `model.layers[l]`, with the kinds that have them (`Point.kinds`):
    resid_pre   block input                                              [b, l, d]       every layer
    norm        the block's RMSNorm output (the mixer's input)          [b, l, d]       every layer
    gate, x, B, C, dt, A_bar, write, h, h_readout, y, gated_norm   the Mamba-2 mixer (`hybrid`)   ssm
    mixer_out   the Mamba-2 mixer's output                               [b, l, d]       ssm
    q, k, v     the projections (no rotary: Nemotron-H is NoPE), heads concatenated, k and v with
                kv_heads heads                                           [b, l, d_q] / [b, l, d_kv]   attention
    pattern     attention probabilities, before they weight v            [b, heads, l, l]  attention
    z           each head's output, heads concatenated, entering o_proj  [b, l, d_q]     attention
    attn_out    the attention's output after o_proj                      [b, l, d]       attention
    mlp_out     the MLP's output                                         [b, l, d]       mlp
    router_logits  the router's logits, one row per token                [b·l, experts]  moe
    shared_out  the shared expert's output                               [b, l, d]       moe
    moe_out     the mixture's output: routed experts plus the shared one [b, l, d]       moe
    resid_post  block output, resid_pre + the mixer's output             [b, l, d]       every layer
and model-level embed (the embedding's output, the residual entering layer 0), final_norm (norm_f),
logits (lm_head). Each mixer's output is added to the residual and nothing follows in its block,
so the block output is affine in noise added to it, and to z and gated_norm, which only a linear
projection separates from it (`Point.affine`).

Checkpoints: NVIDIA's files name the tensors `backbone.*` and each expert apart, transformers'
own `model.*` with the experts stacked; transformers maps the first onto the second as it loads,
and the layer check here reads either.

Parameters, with d the residual width, V embedding rows, f the MLP width, E experts of width f_e,
f_s the shared expert's width, and the mixers' counts in `hybrid` (the head is never tied:
transformers' NemotronHForCausalLM ties nothing):
    2·V·d + d + Σ_layers (d + mixer),  mlp: 2·d·f,  moe: E·d + 2·E·d·f_e + 2·d·f_s
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ..base.checkpoint import ModelLoadError, flag, size
from .base import FP32_BYTES, Point, model_points
from .hybrid import (HybridFamily, attention_count, attention_kwargs, attention_points, attention_values, hook_attention,
                     hook_mixer, mamba2_count, mamba2_values, ssd_points)

BLOCK, MIXER = "model.layers.{l}", "model.layers.{l}.mixer"
SSM, MLP, MOE = ("ssm",), ("mlp",), ("moe",)
# config.json's layer type (transformers 5's name, the legacy one) and pattern character -> the kind
TYPES = {"linear_attention": "ssm", "mamba": "ssm", "full_attention": "attention", "attention": "attention",
         "mlp": "mlp", "moe": "moe"}
SYMBOLS = {"M": "ssm", "*": "attention", "-": "mlp", "E": "moe"}
DEFAULT_KINDS = ("ssm", "moe", "attention", "mlp")  # transformers' NemotronHConfig without a pattern
# a tensor each kind's mixer has under `mixer.` and no other kind's has there
MARKS = {"ssm": "A_log", "attention": "q_proj.weight", "mlp": "up_proj.weight", "moe": "gate.weight"}
WEIGHT_PREFIXES = ("backbone.layers.", "model.layers.")  # NVIDIA's layout, transformers' own


class NemotronHFamily(HybridFamily):
    name, title = "nemotron_h", "Nemotron-H"
    model_type, classes = "nemotron_h", ("NemotronHConfig", "NemotronHForCausalLM")
    aliases = {f"nemotron-h-{s.lower()}": f"nvidia/Nemotron-H-{s}"
               for s in ("4B-Base-8K", "4B-Instruct-128K", "8B-Base-8K", "8B-Reasoning-128K", "47B-Base-8K",
                         "56B-Base-8K")}
    aliases |= {"nemotron-nano-9b-v2": "nvidia/NVIDIA-Nemotron-Nano-9B-v2",
                "nemotron-3-nano-30b-a3b": "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16"}
    tokenizer = "nvidia/Nemotron-H-8B-Base-8K"
    blocks_path, norm_path = "model.layers", "model.norm_f"
    mixing = "hybrid"
    mixer_name = "mixer"  # every kind's mixer is `mixer`; `hook_block` tells them apart
    points = (
        Point("resid_pre", BLOCK, "[b, l, d]", io="input"),
        Point("norm", f"{BLOCK}.norm", "[b, l, d]"),
        *ssd_points(MIXER, gated_norm_affine=True),
        Point("mixer_out", MIXER, "[b, l, d]", affine=True, kinds=SSM),
        *attention_points(MIXER, affine=True),
        Point("mlp_out", MIXER, "[b, l, d]", affine=True, kinds=MLP),
        Point("router_logits", f"{MIXER}.gate", "[b·l, experts]", item=0,
              refused="'router_logits' is one row per token ([b·l, experts]); edit it in a trace instead",
              patchable=False, kinds=MOE),
        Point("shared_out", f"{MIXER}.shared_experts", "[b, l, d]", affine=True, kinds=MOE),
        Point("moe_out", MIXER, "[b, l, d]", affine=True, kinds=MOE),
        Point("resid_post", BLOCK, "[b, l, d]", affine=True),
    ) + model_points("model.embeddings", "model.norm_f", "lm_head")

    def kinds_of(self, config):
        return tuple(TYPES[t] for t in config.layers_block_type)

    def hook_block(self, block: nn.Module) -> None:
        kind = TYPES[block.block_type]
        if kind == "attention":
            hook_attention(block.mixer)
        elif kind == "ssm":
            hook_mixer(block.mixer)

    def layer_kwargs(self, module, resid, layer, start=0):
        kind = self.layer_kind(module, layer)
        if kind == "attention":  # NoPE: the mask is all the position information attention gets
            return attention_kwargs(resid, start)
        return {"attention_mask": None} if kind == "ssm" else {}

    def embed(self, module, ids):
        return module.model.embeddings(ids), (), {}

    def scale_head(self, module):
        return module.lm_head  # no logit multiplier: the head's output is the logits

    def dims(self, config):
        heads = config.num_attention_heads
        H, p = config.mamba_num_heads, config.mamba_head_dim
        return {"d": config.hidden_size, "heads": heads, "d_q": heads * config.head_dim,
                "d_kv": config.num_key_value_heads * config.head_dim, "V": config.vocab_size, "d_in": H * p,
                "n": config.ssm_state_size, "H": H, "g": config.n_groups, "p": p,
                "gn": config.n_groups * config.ssm_state_size, "experts": config.n_routed_experts}

    def layer_bytes(self, config, T, *, ssm=False):
        dims = self.dims(config)
        mlp = 2 * T * config.intermediate_size
        # the router's scores, each token's chosen experts' hidden widths, the shared expert's, the sum
        moe = T * (3 * dims["experts"] + 2 * config.num_experts_per_tok * config.moe_intermediate_size
                   + 2 * config.moe_shared_expert_intermediate_size + 3 * dims["d"])
        one_mixer = max(attention_values(dims, T), mamba2_values(dims, T, config.chunk_size, ssm=ssm), mlp, moe)
        return FP32_BYTES * (4 * T * dims["d"] + one_mixer)

    def parameter_count(self, config, directory):
        return count(sizes(config, directory))

    def max_positions(self, config):
        return config.get("max_position_embeddings")

    def check_layers(self, config, state, path):
        kinds, where = layer_pattern(config, path.parent)
        for i, kind in enumerate(kinds):
            found = mixer_of_weights(state, i)
            if found != kind:
                raise ModelLoadError(f"{path}: layer {i} is {KIND_WORDS[kind]} in {where}, but the weights hold "
                                     f"{KIND_WORDS.get(found, found)} for it; the config's layer pattern does not "
                                     "match these weights")
        beyond = mixer_of_weights(state, len(kinds))
        if beyond != "no mixer":
            raise ModelLoadError(f"{path}: the weights hold {KIND_WORDS.get(beyond, beyond)} for layer {len(kinds)}, "
                                 f"but {where} declares {len(kinds)} layers (0..{len(kinds) - 1}); the config's layer "
                                 "pattern does not match these weights")


NEMOTRON_H = NemotronHFamily()

KIND_WORDS = {"ssm": "an ssm (Mamba-2) layer", "attention": "an attention layer", "mlp": "an mlp layer",
              "moe": "a moe (mixture of experts) layer"}


def mixer_of_weights(state: dict, layer: int) -> str:
    """The kind of layer `layer`'s mixer read off the weights' names, "no mixer", or the kinds found joined by "+"."""
    found = [kind for kind, mark in MARKS.items()
             if any(f"{prefix}{layer}.mixer.{mark}" in state for prefix in WEIGHT_PREFIXES)]
    return "+".join(found) or "no mixer"


def layer_pattern(config: dict, directory: Path) -> tuple[tuple[str, ...], str]:
    """The kind of each layer and where config.json says so, as transformers reads it: `layers_block_type`
    (or its alias `layer_types`), else `hybrid_override_pattern`, else transformers' default."""
    where = directory / "config.json"
    for key in ("layers_block_type", "layer_types"):
        types = config.get(key)
        if types is None:
            continue
        if not isinstance(types, list) or not types:
            raise ModelLoadError(f"{where}: {key} must be a non-empty list of layer types, got {types!r}")
        for i, t in enumerate(types):
            if t not in TYPES:
                raise ModelLoadError(f"{where}: {key}[{i}] is {t!r}; allowed: {', '.join(TYPES)}")
        return tuple(TYPES[t] for t in types), f"{where}'s {key}"
    pattern = config.get("hybrid_override_pattern")
    if pattern is None:
        return DEFAULT_KINDS, f"{where} (no pattern: transformers' default)"
    if not isinstance(pattern, str) or not pattern:
        raise ModelLoadError(f"{where}: hybrid_override_pattern must be a non-empty string, got {pattern!r}")
    for i, c in enumerate(pattern):
        if c not in SYMBOLS:
            raise ModelLoadError(f"{where}: hybrid_override_pattern[{i}] is {c!r}; allowed: M (Mamba-2), "
                                 "* (attention), - (MLP), E (mixture of experts)")
    return tuple(SYMBOLS[c] for c in pattern), f"{where}'s hybrid_override_pattern"


def _either(config: dict, key: str, legacy: str, where, default: int) -> int:
    """A size under its name or its legacy name (mamba_n_groups, …), which wins where both are given, as
    in transformers' NemotronHConfig.__post_init__."""
    return size(config, legacy if legacy in config else key, where, default)


def sizes(config: dict, directory: Path) -> dict:
    """The shape-setting keys of a Nemotron-H config.json, checked, with transformers' defaults."""
    where = directory / "config.json"
    s = {key: size(config, key, where, default) for key, default in (
        ("vocab_size", 131072), ("hidden_size", 4096), ("num_attention_heads", 32), ("head_dim", 128),
        ("intermediate_size", 21504), ("mamba_num_heads", 128), ("mamba_head_dim", 64), ("ssm_state_size", 128),
        ("moe_intermediate_size", 7688), ("moe_shared_expert_intermediate_size", 7688))}
    kv_none = "num_key_value_heads" in config and config["num_key_value_heads"] is None  # null: one per query head
    s["num_key_value_heads"] = s["num_attention_heads"] if kv_none else size(config, "num_key_value_heads", where, 8)
    s["n_groups"] = _either(config, "n_groups", "mamba_n_groups", where, 8)
    s["conv_kernel"] = _either(config, "conv_kernel", "mamba_d_conv", where, 4)
    experts = "n_routed_experts" if "n_routed_experts" in config else "num_local_experts"  # transformers' alias
    s["n_routed_experts"] = size(config, experts, where, 8)
    latent = config.get("moe_latent_size")
    s["moe_latent_size"] = None if latent is None else size(config, "moe_latent_size", where)
    conv_bias = "mamba_conv_bias" if "mamba_conv_bias" in config else "use_conv_bias"  # the legacy name wins
    s["use_conv_bias"] = flag(config, conv_bias, where, True)
    for key in ("use_bias", "mlp_bias"):
        s[key] = flag(config, key, where, False)
    s["kinds"] = layer_pattern(config, directory)[0]
    if s["mamba_num_heads"] % s["n_groups"]:
        raise ModelLoadError(f"{where}: n_groups ({s['n_groups']}) must divide mamba_num_heads "
                             f"({s['mamba_num_heads']})")
    return s


def mlp_count(d: int, f: int, *, bias: bool) -> int:
    """Parameters of one NemotronHMLP (up, down)."""
    return 2 * d * f + ((f + d) if bias else 0)


def count(s: dict) -> int:
    """Parameters of NemotronHForCausalLM for `sizes` s."""
    d, V, E = s["hidden_size"], s["vocab_size"], s["n_routed_experts"]
    d_in, gn = s["mamba_num_heads"] * s["mamba_head_dim"], s["n_groups"] * s["ssm_state_size"]
    latent = s["moe_latent_size"]
    width = latent or d  # what the experts read and write
    moe = E * d + 2 * E * width * s["moe_intermediate_size"] \
        + mlp_count(d, s["moe_shared_expert_intermediate_size"], bias=s["mlp_bias"]) \
        + (2 * d * latent + ((latent + d) if s["mlp_bias"] else 0) if latent else 0)
    mixer = {"ssm": mamba2_count(d, d_in, s["mamba_num_heads"], gn, s["conv_kernel"], proj_bias=s["use_bias"],
                                 conv_bias=s["use_conv_bias"], out_bias=s["use_bias"], norm=True),
             "attention": attention_count(d, s["num_attention_heads"], s["num_key_value_heads"], s["head_dim"],
                                          bias=False),  # NemotronHAttention's projections have no bias
             "mlp": mlp_count(d, s["intermediate_size"], bias=s["mlp_bias"]),
             "moe": moe}
    return 2 * V * d + d + sum(d + mixer[kind] for kind in s["kinds"])
