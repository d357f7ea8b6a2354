"""Pythia (EleutherAI; GPT-NeoX) on transformers' module tree (`GPTNeoXForCausalLM`): a
transformer trained on Mamba's data (the Pile) with Mamba's tokenizer (GPT-NeoX-20B), the
tokenizer-matched control for Mamba.

Points per layer `gpt_neox.layers[l]`:
    resid_pre  block input                                     [b, l, d]
    q, k       after rotary (the first rotary_pct of each head's dims rotated), heads concatenated
                                                               [b, l, d]
    v          as projected (rotary touches q and k only)      [b, l, d]
    pattern    attention probabilities, before they weight v   [b, heads, l, l]
    z          each head's output, heads concatenated, entering `dense`   [b, l, d]
    attn_out   attention output after `dense`                  [b, l, d]
    mlp_out    MLP output                                      [b, l, d]
    resid_post block output                                    [b, l, d]
and model-level embed (emb_dropout output), final_norm (final_layer_norm output), logits.

There is no resid_mid: Pythia's residual is parallel, resid_post = resid_pre + attn(ln_1(resid_pre))
+ mlp(ln_2(resid_pre)); no tensor is "the stream between attention and MLP", and inventing one
would name a sum the model never computes. For the same reason v, z, attn_out, mlp_out and
resid_post reach the block's output affinely (nothing nonlinear follows them), so noise there
restarts from rays (`Point.affine`); only GPT-NeoX checkpoints with the parallel residual load.

q, k, v and pattern are `HookPoint`s on each attention module, called by the attention function
this family registers with transformers' public `AttentionInterface` ("compare_hooked"): eager
attention, line for line transformers' `eager_attention_forward`, that passes q, k, v (after
rotary, reshaped to [b, l, d]) and the probabilities through the hook points before using them.
Edits to any of them in a trace therefore change the output (unlike GPT-2's `pattern`). Noise on
`pattern` is still refused: it is drawn per position over [b, l, ...] points, and the pattern's
second axis is heads.

Parameters, with d the residual width, L layers, V embedding rows, f the MLP width:
    2·V·d + L·(4d² + 2·d·f + f + 8d) + 2d      (embed_in and the untied embed_out; per layer
    qkv 3d² + 3d, dense d² + d, MLP 2·d·f + f + d, two LayerNorms 4d; final LayerNorm 2d)
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..base.checkpoint import ModelLoadError, flag, size
from ..base.hooks import HookPoint
from .base import FP32_BYTES, Point, TransformersFamily, causal_mask, model_points

BLOCK = "gpt_neox.layers.{l}"
PATTERN_REFUSED = ("'pattern' is [b, heads, l, l]: noise is drawn per position along the second axis, which "
                   "is heads here; edit it in a trace instead")
SIZES = ("70m", "160m", "410m", "1b", "1.4b", "2.8b")


class PythiaFamily(TransformersFamily):
    name, title = "pythia", "Pythia"
    model_type, classes = "gpt_neox", ("GPTNeoXConfig", "GPTNeoXForCausalLM")
    default_component = "resid_post"  # the residual stream (the thesis did not noise GPT-2)
    attention = "compare_hooked"  # our name in transformers' AttentionInterface (`register_attention`)
    aliases = {f"pythia-{s}": f"EleutherAI/pythia-{s}" for s in SIZES}
    tokenizer = "EleutherAI/gpt-neox-20b"
    blocks_path, norm_path = "gpt_neox.layers", "gpt_neox.final_layer_norm"
    attribution = ("resid_pre", "attn_out", "resid_post")
    points = (
        Point("resid_pre", BLOCK, "[b, l, d]", io="input"),
        Point("q", f"{BLOCK}.attention.hook_q", "[b, l, d]"),
        Point("k", f"{BLOCK}.attention.hook_k", "[b, l, d]"),
        Point("v", f"{BLOCK}.attention.hook_v", "[b, l, d]", affine=True),
        Point("pattern", f"{BLOCK}.attention.hook_pattern", "[b, heads, l, l]", refused=PATTERN_REFUSED,
              patchable=False),
        Point("z", f"{BLOCK}.attention.dense", "[b, l, d]", io="input", affine=True),
        Point("attn_out", f"{BLOCK}.attention", "[b, l, d]", item=0, affine=True),
        Point("mlp_out", f"{BLOCK}.mlp", "[b, l, d]", affine=True),
        Point("resid_post", BLOCK, "[b, l, d]", affine=True),
    ) + model_points("gpt_neox.emb_dropout", "gpt_neox.final_layer_norm", "lm_head")

    def blocks_from(self, module, start, resid, entry, stop=None, last_only=False):
        _, kwargs = entry
        # the clean forward's cache must not grow with the reruns
        kept = {k: v for k, v in kwargs.items() if k not in ("layer_past", "use_cache")}
        for block in module.gpt_neox.layers[start:stop]:
            resid = block(resid, use_cache=False, **kept)
        return resid

    def embed(self, module, ids):
        resid = module.gpt_neox.embed_in(ids)
        positions = torch.arange(ids.shape[1], device=ids.device)[None]
        rotary = module.gpt_neox.rotary_emb(resid, positions)
        return resid, (), {"attention_mask": causal_mask(resid), "position_embeddings": rotary, "use_cache": False}

    def dims(self, config):
        return {"d": config.hidden_size, "heads": config.num_attention_heads, "V": config.vocab_size}

    def layer_bytes(self, config, T, *, ssm=False):
        d, f = config.hidden_size, config.intermediate_size
        # GPT-2's estimate with the MLP width f, plus q, k, v reshaped for the hook points
        return FP32_BYTES * (T * (11 * d + 2 * f + 3 * config.num_attention_heads * T) + d)

    def parameter_count(self, config, directory):
        return count(sizes(config, directory))

    def build(self, directory, config):
        register_attention()
        module = super().build(directory, config)
        module.config.use_cache = False  # a plain forward keeps no K/V cache (the sweeps rerun blocks)
        for layer in module.gpt_neox.layers:
            for name in ("q", "k", "v", "pattern"):
                setattr(layer.attention, f"hook_{name}", HookPoint())
        return module

    def max_positions(self, config):
        return config["max_position_embeddings"]

    def ignored(self, key):
        # buffers older exports saved: the causal mask (bool), its fill value, rotary frequencies
        return key.endswith(("attention.bias", "attention.masked_bias", "rotary_emb.inv_freq"))


PYTHIA = PythiaFamily()


def sizes(config: dict, directory: Path) -> dict[str, int]:
    """The shape-setting keys of a transformers GPT-NeoX config, checked."""
    where = directory / "config.json"
    s = {key: size(config, key, where) for key in ("vocab_size", "hidden_size", "num_hidden_layers",
                                                    "num_attention_heads", "intermediate_size",
                                                    "max_position_embeddings")}
    if s["hidden_size"] % s["num_attention_heads"]:
        raise ModelLoadError(f"{where}: hidden_size ({s['hidden_size']}) must be a multiple of "
                             f"num_attention_heads ({s['num_attention_heads']})")
    if not flag(config, "use_parallel_residual", where, True):
        raise ModelLoadError(f"{where}: use_parallel_residual is false; only GPT-NeoX checkpoints with the "
                             "parallel residual (Pythia) are supported")
    s["untied_head"] = not flag(config, "tie_word_embeddings", where, False)
    s["bias"] = flag(config, "attention_bias", where, True)
    return s


def count(s: dict[str, int]) -> int:
    """Parameters of GPTNeoXForCausalLM for `sizes` s."""
    d, f, V = s["hidden_size"], s["intermediate_size"], s["vocab_size"]
    attention = 4 * d * d + (4 * d if s["bias"] else 0)
    block = attention + (2 * d * f + f + d) + 4 * d
    return V * d + s["num_hidden_layers"] * block + 2 * d + (V * d if s["untied_head"] else 0)


def register_attention() -> None:
    """Register `hooked_attention` (and transformers' eager mask for it) as PYTHIA.attention; idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(PYTHIA.attention, hooked_attention)
    AttentionMaskInterface.register(PYTHIA.attention, eager_mask)


def hooked_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """transformers' eager attention with q, k, v [b, heads, l, head] and the probabilities passed
    through the module's hook points (q, k, v as [b, l, d], heads concatenated)."""
    def hooked(name, x):  # [b, heads, l, head] -> hook on [b, l, d] -> back, as a view of the hook's output
        b, heads, T, head = x.shape
        flat = getattr(module, f"hook_{name}")(x.transpose(1, 2).reshape(b, T, heads * head))
        return flat.view(b, T, heads, head).transpose(1, 2)

    query, key, value = hooked("q", query), hooked("k", key), hooked("v", value)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    pattern = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    pattern = module.hook_pattern(pattern)
    pattern = torch.nn.functional.dropout(pattern, p=dropout, training=module.training)
    return torch.matmul(pattern, value).transpose(1, 2).contiguous(), pattern
