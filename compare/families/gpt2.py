"""GPT-2 on transformers' own module tree (`GPT2LMHeadModel`, eager attention so that `pattern`
exists); its points are read off module inputs/outputs, which is all nnsight needs.

Points per layer `transformer.h[l]`:
    resid_pre  block input                        [b, l, d]
    q, k, v    thirds of c_attn's output          [b, l, d]   (heads concatenated, no rotary)
    pattern    attention probabilities            [b, heads, l, l]
    z          each head's output, heads concatenated, entering c_proj   [b, l, d]
    attn_out   attention output after c_proj      [b, l, d]
    resid_mid  resid_pre + attn_out (ln_2 input)  [b, l, d]
    mlp_out    MLP output                         [b, l, d]
    resid_post block output                       [b, l, d]
and model-level embed (token + position embedding), final_norm (ln_f output), logits.
`pattern` may be read and edited in a trace but not noised: transformers returns it after using
it, so an edit there changes nothing downstream. mlp_out and resid_post are added after the
block's last nonlinearity, so noise there is affine in the block's output.

Parameters, with d the residual width, L layers, V embedding rows, P positions, f = n_inner or 4d:
    V·d + P·d + L·(4d² + 2·d·f + f + 9d) + 2d
    (attention 4d² + 4d, MLP 2·d·f + f + d, ln_1 + ln_2 4d; final LayerNorm 2d; + V·d if untied)
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..base.checkpoint import ModelLoadError, flag, size
from .base import FP32_BYTES, Point, TransformersFamily, causal_mask, model_points

BLOCK = "transformer.h.{l}"
PATTERN_REFUSED = ("GPT-2's 'pattern' is read after attention used it, so noise there changes nothing")


class GPT2Family(TransformersFamily):
    name, title = "gpt2", "GPT-2"
    model_type, classes = "gpt2", ("GPT2Config", "GPT2LMHeadModel")
    default_component = "resid_post"  # the residual stream (the thesis did not noise GPT-2)
    aliases = {"gpt2": "openai-community/gpt2", **{f"gpt2-{s}": f"openai-community/gpt2-{s}"
                                                  for s in ("medium", "large", "xl")}}
    tokenizer = "openai-community/gpt2"
    blocks_path, norm_path = "transformer.h", "transformer.ln_f"
    attribution = ("resid_pre", "attn_out", "resid_mid", "resid_post")
    points = (
        Point("resid_pre", BLOCK, "[b, l, d]", io="input"),
        Point("q", f"{BLOCK}.attn.c_attn", "[b, l, d]", part="q"),
        Point("k", f"{BLOCK}.attn.c_attn", "[b, l, d]", part="k"),
        Point("v", f"{BLOCK}.attn.c_attn", "[b, l, d]", part="v"),
        Point("pattern", f"{BLOCK}.attn", "[b, heads, l, l]", item=1, refused=PATTERN_REFUSED, patchable=False),
        Point("z", f"{BLOCK}.attn.c_proj", "[b, l, d]", io="input"),
        Point("attn_out", f"{BLOCK}.attn", "[b, l, d]", item=0),
        Point("resid_mid", f"{BLOCK}.ln_2", "[b, l, d]", io="input"),
        Point("mlp_out", f"{BLOCK}.mlp", "[b, l, d]", affine=True),
        Point("resid_post", BLOCK, "[b, l, d]", affine=True),
    ) + model_points("transformer.drop", "transformer.ln_f", "lm_head")

    def blocks_from(self, module, start, resid, entry, stop=None, last_only=False):
        (_, *rest), kwargs = entry
        mask = rest[1] if len(rest) > 1 else kwargs.get("attention_mask")
        extra = {k: v for k, v in kwargs.items() if k not in ("use_cache", "past_key_values", "attention_mask")}
        for block in module.transformer.h[start:stop]:
            resid = block(resid, None, mask, use_cache=False, **extra)
        return resid

    def embed(self, module, ids):
        t = module.transformer
        resid = t.wte(ids) + t.wpe(torch.arange(ids.shape[1], device=ids.device))
        return resid, (None, causal_mask(resid)), {"use_cache": False}

    def dims(self, config):
        return {"d": config.n_embd, "heads": config.n_head, "V": config.vocab_size}

    def layer_bytes(self, config, T, *, ssm=False):
        return FP32_BYTES * (T * (16 * config.n_embd + 3 * config.n_head * T) + config.n_embd)

    def parameter_count(self, config, directory):
        return count(sizes(config, directory))

    def max_positions(self, config):
        return config["n_positions"]


GPT2 = GPT2Family()


def sizes(config: dict, directory: Path) -> dict[str, int]:
    """The shape-setting keys of a transformers GPT-2 config, checked; n_inner None means 4·n_embd."""
    where = directory / "config.json"
    s = {key: size(config, key, where) for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")}
    inner = config.get("n_inner")
    s["n_inner"] = 4 * s["n_embd"] if inner is None else size(config, "n_inner", where)
    if s["n_embd"] % s["n_head"]:
        raise ModelLoadError(f"{where}: n_embd ({s['n_embd']}) must be a multiple of n_head ({s['n_head']})")
    s["untied_head"] = not flag(config, "tie_word_embeddings", where, True)
    return s


def count(s: dict[str, int]) -> int:
    """Parameters of GPT2LMHeadModel for `sizes` s (the LM head tied unless untied_head)."""
    d, f, V = s["n_embd"], s["n_inner"], s["vocab_size"]
    block = (4 * d * d + 4 * d) + (2 * d * f + f + d) + 4 * d  # attention, MLP, ln_1 + ln_2
    return V * d + s["n_positions"] * d + s["n_layer"] * block + 2 * d + (V * d if s["untied_head"] else 0)
