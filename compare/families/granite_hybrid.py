"""Granite-4.0-H (IBM; transformers' `GraniteMoeHybridForCausalLM`, model_type "granitemoehybrid"):
Mamba-2 layers with an attention layer interleaved every few (the 350M checkpoint: 28 Mamba-2 and
4 attention layers), one residual stream. Each layer is one mixer — Mamba-2 or attention, as
config.json's `layer_types` says ("mamba"/"attention", transformers 5 reads them as
"linear_attention"/"full_attention") — then an MLP: shared, plus a mixture of experts where the
config has `num_local_experts` > 0 (the 1B and 350M checkpoints are dense).

Points per layer `model.layers[l]`, with the kinds that have them (`Point.kinds`):
    resid_pre   block input                                            [b, l, d]       every layer
    norm        input_layernorm output (the mixer's input)             [b, l, d]       every layer
    gate, x, B, C, dt, y, gated_norm   the Mamba-2 mixer (`hybrid`)                    ssm
    A_bar, write, h, h_readout   its state, materialised when read or edited (`hybrid`; an edit
                of h enters the recurrence, one of h_readout changes y where edited)    ssm
    mixer_out   the Mamba-2 mixer's output, before residual_multiplier [b, l, d]       ssm
    q, k, v     after rotary where the model has it (the released ones are NoPE), heads
                concatenated, k and v with kv_heads heads              [b, l, d_q] / [b, l, d_kv]   attention
    pattern     attention probabilities, before they weight v          [b, heads, l, l]  attention
    z           each head's output, heads concatenated, entering o_proj  [b, l, d_q]   attention
    attn_out    attention output after o_proj, before residual_multiplier  [b, l, d]   attention
    resid_mid   resid_pre + residual_multiplier · (mixer_out or attn_out)  [b, l, d]   every layer
    router_logits  the MoE router's logits, one row per token          [b·l, experts]  MoE layers only
    moe_out     the experts' weighted output                           [b, l, d]       MoE layers only
    mlp_out     the shared MLP's output                                [b, l, d]       every layer
    resid_post  block output                                           [b, l, d]       every layer
and model-level embed (the residual entering layer 0, after embedding_multiplier), final_norm,
logits (after logits_scaling, `hybrid.ScaledHead`).

Parameters, with d the residual width, V embedding rows, f_s the shared MLP width, f the expert
width, E experts, and the mixers' counts in `hybrid`:
    V·d (+ V·d untied) + d + Σ_layers (2d + 3·d·f_s + [E·d + 3·E·d·f] + mixer)
"""
from __future__ import annotations

from pathlib import Path

from ..base.checkpoint import ModelLoadError, flag, size
from .base import FP32_BYTES, Point
from .hybrid import (HybridFamily, ScaledHead, attention_count, attention_kwargs, attention_points, attention_values,
                     kind_of_weights, mamba2_count, mamba2_values, refuse_beyond, refuse_layer, rotary, ssd_points)

BLOCK, MIXER, ATTN = "model.layers.{l}", "model.layers.{l}.mamba", "model.layers.{l}.self_attn"
SSM = ("ssm",)
KINDS = {"mamba": "ssm", "linear_attention": "ssm", "attention": "attention", "full_attention": "attention"}
MOE_POINTS = ("router_logits", "moe_out")


class GraniteHybridFamily(HybridFamily):
    name, title = "granite_hybrid", "Granite-4.0-H"
    model_type, classes = "granitemoehybrid", ("GraniteMoeHybridConfig", "GraniteMoeHybridForCausalLM")
    aliases = {f"granite-4.0-h-{s}": f"ibm-granite/granite-4.0-h-{s}" for s in ("350m", "1b", "micro", "tiny", "small")}
    aliases |= {f"granite-4.0-h-{s}-base": f"ibm-granite/granite-4.0-h-{s}-base" for s in ("350m", "1b")}
    tokenizer = "ibm-granite/granite-4.0-h-350m"
    blocks_path, norm_path = "model.layers", "model.norm"
    mixing = "hybrid"
    points = (
        Point("resid_pre", BLOCK, "[b, l, d]", io="input"),
        Point("norm", f"{BLOCK}.input_layernorm", "[b, l, d]"),
        *ssd_points(MIXER),
        Point("mixer_out", MIXER, "[b, l, d]", kinds=SSM),
        *attention_points(ATTN),
        Point("resid_mid", f"{BLOCK}.post_attention_layernorm", "[b, l, d]", io="input"),
        Point("router_logits", f"{BLOCK}.block_sparse_moe.router", "[b·l, experts]", item=0,
              refused="'router_logits' is one row per token ([b·l, experts]); edit it in a trace instead",
              patchable=False),
        Point("moe_out", f"{BLOCK}.block_sparse_moe", "[b, l, d]", affine=True),
        Point("mlp_out", f"{BLOCK}.shared_mlp", "[b, l, d]", affine=True),
        Point("resid_post", BLOCK, "[b, l, d]", affine=True),
        Point("embed", "model.layers.0", "[b, l, d]", io="input"),
        Point("final_norm", "model.norm", "[b, l, d]"),
        Point("logits", "lm_head", "[b, l, V]"),
    )

    def kinds_of(self, config):
        return tuple(KINDS[t] for t in config.layers_block_type)

    def points_at(self, module, layer):
        names = super().points_at(module, layer)
        if self.blocks(module)[layer].block_sparse_moe is None:
            names = tuple(n for n in names if n not in MOE_POINTS)
        return names

    def layer_kwargs(self, module, resid, layer, start=0):
        if self.layer_kind(module, layer) == "ssm":
            return {"attention_mask": None}
        rotary_emb = module.model.rotary_emb
        return {**attention_kwargs(resid, start),
                "position_embeddings": rotary(rotary_emb, resid, start) if rotary_emb else None}

    def embed(self, module, ids):
        return module.model.embed_tokens(ids) * module.model.embedding_multiplier, (), {}

    def scale_head(self, module):
        divisor, module.config.logits_scaling = module.config.logits_scaling, 1.0
        return ScaledHead(module.lm_head, divisor=divisor)

    def dims(self, config):
        heads, kv = config.num_attention_heads, config.num_key_value_heads
        head = getattr(config, "head_dim", None) or config.hidden_size // heads
        d_in = config.mamba_expand * config.hidden_size
        return {"d": config.hidden_size, "heads": heads, "d_q": heads * head, "d_kv": kv * head, "V": config.vocab_size,
                "d_in": d_in, "n": config.mamba_d_state, "H": config.mamba_n_heads,
                "g": config.mamba_n_groups, "p": config.mamba_d_head, "gn": config.mamba_n_groups * config.mamba_d_state, "experts": config.num_local_experts}

    def layer_bytes(self, config, T, *, ssm=False):
        dims = self.dims(config)
        mlp = 2 * max(config.shared_intermediate_size, config.intermediate_size if dims["experts"] else 0)
        return FP32_BYTES * (T * (4 * dims["d"] + mlp) + max(attention_values(dims, T),
                                                             mamba2_values(dims, T, config.mamba_chunk_size, ssm=ssm)))

    def parameter_count(self, config, directory):
        return count(sizes(config, directory))

    def max_positions(self, config):
        return config.get("max_position_embeddings")

    def check_layers(self, config, state, path):
        kinds = layer_kinds(config, path.parent)
        for i, kind in enumerate(kinds):
            found = kind_of_weights(state, f"model.layers.{i}.", "self_attn", "mamba")
            if found != kind:
                refuse_layer(path, i, f"an {kind} layer" if kind == "attention" else "an ssm (Mamba-2) layer", found,
                             f"{path.parent / 'config.json'}'s layer_types")
        refuse_beyond(state, "model.layers.", len(kinds), path, f"{path.parent / 'config.json'}'s layer_types")


GRANITE_HYBRID = GraniteHybridFamily()


def layer_kinds(config: dict, directory: Path) -> tuple[str, ...]:
    """The kind of each layer from config.json's layer_types (or its legacy name layers_block_type)."""
    where = directory / "config.json"
    L = size(config, "num_hidden_layers", where)
    types = config.get("layer_types", config.get("layers_block_type"))
    if types is None:
        return ("ssm",) * L  # transformers' default: every layer Mamba-2
    if not isinstance(types, list) or len(types) != L:
        raise ModelLoadError(f"{where}: layer_types must be a list of num_hidden_layers ({L}) layer kinds, "
                             f"got {types!r}")
    for i, t in enumerate(types):
        if t not in KINDS:
            raise ModelLoadError(f"{where}: layer_types[{i}] is {t!r}; allowed: {', '.join(KINDS)}")
    return tuple(KINDS[t] for t in types)


def sizes(config: dict, directory: Path) -> dict:
    """The shape-setting keys of a Granite-4.0-H config.json, checked, with transformers' defaults."""
    where = directory / "config.json"
    s = {key: size(config, key, where, default) for key, default in (
        ("vocab_size", 32000), ("hidden_size", 4096), ("intermediate_size", 11008), ("num_attention_heads", 32),
        ("shared_intermediate_size", 1024), ("mamba_n_heads", 128), ("mamba_n_groups", 1), ("mamba_d_state", 256),
        ("mamba_d_conv", 4), ("mamba_expand", 2))}
    s["num_key_value_heads"] = size(config, "num_key_value_heads", where, s["num_attention_heads"])
    experts = config.get("num_local_experts", 8)
    if not isinstance(experts, int) or isinstance(experts, bool) or experts < 0:
        raise ModelLoadError(f"{where}: num_local_experts must be an integer ≥ 0, got {experts!r}")
    s["num_local_experts"] = experts
    s["head"] = size(config, "head_dim", where, s["hidden_size"] // s["num_attention_heads"])
    s["kinds"] = layer_kinds(config, directory)
    for key, default in (("tie_word_embeddings", False), ("attention_bias", False), ("mamba_conv_bias", True),
                         ("mamba_proj_bias", False)):
        s[key] = flag(config, key, where, default)
    if (s["mamba_expand"] * s["hidden_size"]) % s["mamba_n_heads"]:
        raise ModelLoadError(f"{where}: mamba_n_heads ({s['mamba_n_heads']}) must divide mamba_expand · "
                             f"hidden_size ({s['mamba_expand'] * s['hidden_size']})")
    return s


def count(s: dict) -> int:
    """Parameters of GraniteMoeHybridForCausalLM for `sizes` s."""
    d, V, E = s["hidden_size"], s["vocab_size"], s["num_local_experts"]
    mixer = {"ssm": mamba2_count(d, s["mamba_expand"] * d, s["mamba_n_heads"], s["mamba_n_groups"] * s["mamba_d_state"],
                                 s["mamba_d_conv"], proj_bias=s["mamba_proj_bias"], conv_bias=s["mamba_conv_bias"],
                                 out_bias=s["mamba_proj_bias"], norm=True),
             "attention": attention_count(d, s["num_attention_heads"], s["num_key_value_heads"], s["head"],
                                          bias=s["attention_bias"])}
    mlp = 3 * d * s["shared_intermediate_size"] + (E * d + 3 * E * d * s["intermediate_size"] if E else 0)
    layers = sum(2 * d + mlp + mixer[kind] for kind in s["kinds"])
    return V * d * (1 if s["tie_word_embeddings"] else 2) + layers + d

