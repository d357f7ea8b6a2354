"""Falcon-H1 (TII; transformers' `FalconH1ForCausalLM`, model_type "falcon_h1"): every layer runs
attention and a Mamba-2 mixer side by side on the same normed input and adds both to the
residual, then an MLP:
    resid_mid  = resid_pre + ssm_out_multiplier · mixer_out + attention_out_multiplier · attn_out
    resid_post = resid_mid + mlp_out
so every layer is of kind "attention+ssm", and the two branches are separate points: either can
be read, noised, patched or zeroed without the other.

Points per layer `model.layers[l]`:
    resid_pre   block input                                             [b, l, d]
    norm        input_layernorm output (both branches' input; attention gets it times
                attention_in_multiplier)                                [b, l, d]
    gate, x, B, C, dt, y, gated_norm   the Mamba-2 branch (`hybrid`; x, B, C after
                ssm_in_multiplier and the μP vector on in_proj)
    A_bar, write, h, h_readout   its state, materialised when read or edited (`hybrid`; an edit
                of h enters the recurrence, one of h_readout changes y where edited)
    mixer_out   the Mamba-2 branch's output, before ssm_out_multiplier  [b, l, d]
    q, k, v     after rotary (k after key_multiplier), heads concatenated   [b, l, d_q] / [b, l, d_kv]
    pattern     attention probabilities, before they weight v           [b, heads, l, l]
    z           each head's output, heads concatenated, entering o_proj [b, l, d_q]
    attn_out    the attention branch's output, before attention_out_multiplier   [b, l, d]
    resid_mid   pre_ff_layernorm input                                  [b, l, d]
    mlp_out     feed_forward output                                     [b, l, d]
    resid_post  block output                                            [b, l, d]
and model-level embed (the residual entering layer 0, after embedding_multiplier), final_norm,
logits (after lm_head_multiplier, `hybrid.ScaledHead`).

Parameters, with d the residual width, V embedding rows, f the MLP width, the mixers' counts in
`hybrid`: V·d (+ V·d untied) + d + L·(2d + 3·d·f [+ 2f + d biases] + attention + Mamba-2)
"""
from __future__ import annotations

from pathlib import Path

from ..base.checkpoint import ModelLoadError, flag, size
from .base import FP32_BYTES, Point
from .hybrid import (HybridFamily, ScaledHead, attention_count, attention_kwargs, attention_points, attention_values,
                     kind_of_weights, mamba2_count, mamba2_values, refuse_beyond, refuse_layer, rotary, ssd_points)

BLOCK, MIXER, ATTN = "model.layers.{l}", "model.layers.{l}.mamba", "model.layers.{l}.self_attn"
SSM = ("ssm",)
KIND = "attention+ssm"


class FalconH1Family(HybridFamily):
    name, title = "falcon_h1", "Falcon-H1"
    model_type, classes = "falcon_h1", ("FalconH1Config", "FalconH1ForCausalLM")
    aliases = {f"falcon-h1-{s.lower()}{suffix.lower()}": f"tiiuae/Falcon-H1-{s}{suffix}"
               for s in ("0.5B", "1.5B", "1.5B-Deep", "3B", "7B", "34B") for suffix in ("-Base", "-Instruct")}
    tokenizer = "tiiuae/Falcon-H1-0.5B-Base"
    blocks_path, norm_path = "model.layers", "model.final_layernorm"
    mixing = "hybrid"
    points = (
        Point("resid_pre", BLOCK, "[b, l, d]", io="input"),
        Point("norm", f"{BLOCK}.input_layernorm", "[b, l, d]"),
        *ssd_points(MIXER),
        Point("mixer_out", MIXER, "[b, l, d]", kinds=SSM),
        *attention_points(ATTN),
        Point("resid_mid", f"{BLOCK}.pre_ff_layernorm", "[b, l, d]", io="input"),
        Point("mlp_out", f"{BLOCK}.feed_forward", "[b, l, d]", affine=True),
        Point("resid_post", BLOCK, "[b, l, d]", item=0, affine=True),
        Point("embed", "model.layers.0", "[b, l, d]", io="input"),
        Point("final_norm", "model.final_layernorm", "[b, l, d]"),
        Point("logits", "lm_head", "[b, l, V]"),
    )

    def kinds_of(self, config):
        return (KIND,) * config.num_hidden_layers

    def layer_kwargs(self, module, resid, layer, start=0):
        return {**attention_kwargs(resid, start), "mamba_attention_mask": None,
                "position_embeddings": rotary(module.model.rotary_emb, resid, start)}

    def embed(self, module, ids):
        return module.model.embed_tokens(ids) * module.model.embedding_multiplier, (), {}

    def scale_head(self, module):
        multiplier, module.model.lm_head_multiplier = module.model.lm_head_multiplier, 1.0
        return ScaledHead(module.lm_head, multiplier=multiplier)

    def dims(self, config):
        heads, kv = config.num_attention_heads, config.num_key_value_heads
        head = getattr(config, "head_dim", None) or config.hidden_size // heads
        d_in = config.mamba_d_ssm or config.mamba_expand * config.hidden_size
        return {"d": config.hidden_size, "heads": heads, "d_q": heads * head, "d_kv": kv * head, "V": config.vocab_size,
                "d_in": d_in, "n": config.mamba_d_state, "H": config.mamba_n_heads,
                "g": config.mamba_n_groups, "p": config.mamba_d_head, "gn": config.mamba_n_groups * config.mamba_d_state}

    def layer_bytes(self, config, T, *, ssm=False):
        dims = self.dims(config)
        return FP32_BYTES * (T * (4 * dims["d"] + 3 * config.intermediate_size) + attention_values(dims, T)
                             + mamba2_values(dims, T, config.mamba_chunk_size, ssm=ssm))

    def parameter_count(self, config, directory):
        return count(sizes(config, directory))

    def max_positions(self, config):
        return config.get("max_position_embeddings")

    def check_layers(self, config, state, path):
        n = size(config, "num_hidden_layers", path.parent / "config.json")
        for i in range(n):
            found = kind_of_weights(state, f"model.layers.{i}.", "self_attn", "mamba")
            if found != KIND:
                refuse_layer(path, i, "an attention+ssm layer (every Falcon-H1 layer runs both)", found,
                             f"{path.parent / 'config.json'}")
        refuse_beyond(state, "model.layers.", n, path, f"{path.parent / 'config.json'}'s num_hidden_layers")


FALCON_H1 = FalconH1Family()


def sizes(config: dict, directory: Path) -> dict:
    """The shape-setting keys of a Falcon-H1 config.json, checked, with transformers' defaults."""
    where = directory / "config.json"
    s = {key: size(config, key, where, default) for key, default in (
        ("vocab_size", 128000), ("hidden_size", 4096), ("intermediate_size", 14336), ("num_hidden_layers", 32),
        ("num_attention_heads", 32), ("mamba_n_heads", 128), ("mamba_n_groups", 1), ("mamba_d_state", 256),
        ("mamba_d_conv", 4), ("mamba_expand", 2))}
    kv_none = "num_key_value_heads" in config and config["num_key_value_heads"] is None  # null: one per query head
    s["num_key_value_heads"] = s["num_attention_heads"] if kv_none else size(config, "num_key_value_heads", where, 8)
    s["head"] = size(config, "head_dim", where, s["hidden_size"] // s["num_attention_heads"])
    d_ssm = config.get("mamba_d_ssm", 1024)
    s["d_in"] = s["mamba_expand"] * s["hidden_size"] if d_ssm is None else size(config, "mamba_d_ssm", where)
    for key, default in (("tie_word_embeddings", False), ("attention_bias", False), ("mamba_conv_bias", True),
                         ("mamba_proj_bias", False), ("projectors_bias", False), ("mamba_rms_norm", False),
                         ("mlp_bias", False)):
        s[key] = flag(config, key, where, default)
    if s["d_in"] % s["mamba_n_heads"]:
        raise ModelLoadError(f"{where}: mamba_n_heads ({s['mamba_n_heads']}) must divide the Mamba-2 width "
                             f"({s['d_in']}: mamba_d_ssm, or mamba_expand · hidden_size)")
    return s


def count(s: dict) -> int:
    """Parameters of FalconH1ForCausalLM for `sizes` s."""
    d, V, f = s["hidden_size"], s["vocab_size"], s["intermediate_size"]
    mamba = mamba2_count(d, s["d_in"], s["mamba_n_heads"], s["mamba_n_groups"] * s["mamba_d_state"], s["mamba_d_conv"],
                         proj_bias=s["mamba_proj_bias"], conv_bias=s["mamba_conv_bias"], out_bias=s["projectors_bias"],
                         norm=s["mamba_rms_norm"])
    attention = attention_count(d, s["num_attention_heads"], s["num_key_value_heads"], s["head"], bias=s["attention_bias"])
    mlp = 3 * d * f + ((2 * f + d) if s["mlp_bias"] else 0)
    return V * d * (1 if s["tie_word_embeddings"] else 2) + s["num_hidden_layers"] * (2 * d + mlp + attention + mamba) + d
