"""Mamba-2 (Dao & Gu 2024) on our own module tree (`compare.ssm.mamba2.Mamba2LM`); original mamba_ssm
checkpoints (the Hub's state-spaces/mamba2-*: config.json with d_model, n_layer and
ssm_cfg {layer: "Mamba2", ...}) and transformers' `Mamba2ForCausalLM` ones (model_type
"mamba2") load into it.

Points per layer `layers[l]` (shapes in `compare.ssm.mamba2`'s glossary): the block's resid_pre, norm,
mixer_out, resid_post; the mixer's gate, x, B, C, dt, A_bar, write, h, h_readout, y, gated_norm.
Model level: embed, final_norm, logits.

Noise is affine in the block's output on gated_norm, mixer_out and resid_post only: y (and the
state before it) reaches out_proj through the gated RMSNorm, which divides by y's own size.
No ray path (`rays`): Mamba-1's in_proj trick is not written for this block. Noise on h,
h_readout, write and B is affine in y, though (`Point.into_y`): the restart engine adds its change
of y (`noise_into_y`) to the clean y and finishes the block from there (`block_from_y`), without
materialising a state per run.

Parameters (the loader's memory check), with d the residual width, L layers, V embedding rows:
    V·d (twice when the LM head is untied) + L·(d + mixer) + d, the mixer being in_proj
    d·(2·d_in + 2·g·n + heads), conv1d (d_in + 2·g·n)·(k + 1), dt_bias, A_log, D (heads each),
    the gated norm d_in, out_proj d_in·d (plus biases where the config asks).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..base import checkpoint
from ..base.checkpoint import ModelLoadError, flag, size
from ..ssm.mamba2 import Mamba2Config, Mamba2LM
from ..ssm.ssd import CHUNK, attention_terms, increment_into_y
from .base import FP32_BYTES, Family, Point, model_points


def _p(name, owner, shape, **kw):
    return Point(name, f"{owner}hook_{name}", shape, **kw)


BLOCK, MIXER = "layers.{l}.", "layers.{l}.mixer."
STATE = "[b, l, heads, p, n]"


class Mamba2Family(Family):
    name, title = "mamba2", "Mamba-2"
    aliases = {f"mamba2-{s}": f"state-spaces/mamba2-{s}" for s in ("130m", "370m", "780m", "1.3b", "2.7b")}
    tokenizer = "EleutherAI/gpt-neox-20b"
    blocks_path, norm_path = "layers", "norm_f"
    mixing = "ssm"
    default_component = "h"  # the state h(t), as the thesis noised Mamba
    attention_units = "heads"  # one scalar decay per head: α is per head, shared by its headdim channels
    attention_points = ("x", "B", "C", "dt", "y")
    points = (
        _p("resid_pre", BLOCK, "[b, l, d]"),
        _p("norm", BLOCK, "[b, l, d]"),
        _p("gate", MIXER, "[b, l, d_in]"),
        _p("x", MIXER, "[b, l, heads, p]"),
        _p("B", MIXER, "[b, l, g, n]", into_y=True),
        _p("C", MIXER, "[b, l, g, n]"),
        _p("dt", MIXER, "[b, l, heads]"),
        _p("A_bar", MIXER, "[b, l, heads]", ssm=True),
        _p("write", MIXER, STATE, ssm=True, into_y=True),
        _p("h", MIXER, STATE, ssm=True, into_y=True),
        _p("h_readout", MIXER, STATE, ssm=True, into_y=True),
        _p("y", MIXER, "[b, l, heads, p]"),
        _p("gated_norm", MIXER, "[b, l, d_in]", affine=True),
        _p("mixer_out", BLOCK, "[b, l, d]", affine=True),
        _p("resid_post", BLOCK, "[b, l, d]", affine=True),
    ) + model_points("hook_embed", "hook_final_norm", "hook_logits")

    def blocks_from(self, module, start, resid, entry, stop=None, last_only=False):
        blocks = module.layers
        for i in range(start, len(blocks) if stop is None else stop):
            resid = blocks[i](resid, last_only=last_only and i == len(blocks) - 1)
        return resid

    def embed(self, module, ids):
        return module.embeddings(ids).float(), (), {}  # the residual stream is fp32 (`Mamba2LM.forward`)

    def ssm_parameters(self, module, layer):
        """(A [heads], D [heads]): Mamba-2's are one scalar per head."""
        mixer = module.layers[layer].mixer
        return -torch.exp(mixer.A_log.float()), mixer.D.float()

    def hidden_attention_terms(self, module, layer, seen, units):
        """Per head: α[t, s] = C_t · B_s · Π_{k=s+1..t} Ā_k · Δ_s (`ssd.ssd_attention`)."""
        return attention_terms(*self.ssm_parameters(module, layer), seen, units)

    into_y_points = ("dt", "x", "C", "gate", "y")

    def noise_into_y(self, module, layer, component, terms, positions, values):
        """Δy [R, T, heads, p] for values [R, P, heads, p, n] added to h, write or h_readout, or
        [R, P, g, n] added to B, at `positions`: y is linear in each (`ssd.increment_into_y`)."""
        dt, x, C = (terms[name] for name in ("dt", "x", "C"))
        return increment_into_y(component, self.ssm_parameters(module, layer)[0], dt, x, C, positions, values)

    def block_from_y(self, module, layer, terms, resid, y):
        """resid + the mixer's gated RMSNorm and out_proj of y (`Mamba2Mixer.output`), with the clean gate."""
        return resid + module.layers[layer].mixer.output(y, terms["gate"])

    def dims(self, config):
        return {"d": config.d_model, "d_in": config.d_inner, "n": config.d_state, "V": config.vocab_size,
                "heads": config.nheads, "p": config.headdim, "g": config.ngroups}

    def layer_bytes(self, config, T, *, ssm=False):
        state = config.d_inner * config.d_state
        # materialised: Ā-scaled write, h, its copy and the increment's scan; else the chunked
        # form's [Q, Q] decay and score matrices per head and one state per chunk
        ssm_bytes = 5 * T * state if ssm else 3 * T * CHUNK * config.nheads + -(-T // CHUNK) * 2 * state
        return FP32_BYTES * (ssm_bytes + 12 * T * config.d_inner + config.d_model)

    def matches(self, config):
        if config.get("model_type") == "mamba2":
            return True
        ssm = config.get("ssm_cfg")
        return config.get("model_type") is None and isinstance(ssm, dict) and ssm.get("layer") == "Mamba2"

    def parameter_count(self, config, directory):
        return count(mamba2_config(config, directory))

    def build(self, directory, config):
        cfg = mamba2_config(config, directory)
        checkpoint.check_memory(count(cfg), directory)
        path, state = checkpoint.read_weights(directory)
        check_shapes(cfg, state, directory / "config.json", mamba_ssm="model_type" not in config)
        model = Mamba2LM(cfg)
        try:
            model.load_checkpoint(state)
        except ValueError as err:
            raise ModelLoadError(f"{path}: {err}") from None
        return model

    def embedding(self, module):
        return module.embeddings


MAMBA2 = Mamba2Family()


def mamba2_config(config: dict, directory: Path) -> Mamba2Config:
    """Our `Mamba2Config` from transformers' Mamba2Config (model_type "mamba2") or an original
    mamba_ssm config.json, read as it is (it is not a transformers config)."""
    where = directory / "config.json"
    if config.get("model_type") == "mamba2":
        if config.get("hidden_act", "silu") != "silu":
            raise ModelLoadError(f"{where}: hidden_act {config['hidden_act']!r} is not supported (only silu)")
        d, expand = size(config, "hidden_size", where), size(config, "expand", where, 2)
        headdim = size(config, "head_dim", where, 64)
        heads = size(config, "num_heads", where, 128)
        if heads * headdim != expand * d:
            raise ModelLoadError(f"{where}: num_heads × head_dim = {heads} × {headdim} = {heads * headdim} must "
                                 f"equal expand × hidden_size = {expand} × {d} = {expand * d}")
        return Mamba2Config(d_model=d, n_layer=size(config, "num_hidden_layers", where),
                            vocab_size=size(config, "vocab_size", where), d_state=size(config, "state_size", where, 128),
                            d_conv=size(config, "conv_kernel", where, 4), expand=expand, headdim=headdim,
                            ngroups=size(config, "n_groups", where, 8),
                            conv_bias=flag(config, "use_conv_bias", where, True),
                            bias=flag(config, "use_bias", where, False), norm_eps=_eps(config, "layer_norm_epsilon", where),
                            dt_limit=_dt_limit(config.get("time_step_limit", (0.0, math.inf)), "time_step_limit", where),
                            tie_embeddings=flag(config, "tie_word_embeddings", where, False))
    ssm = config.get("ssm_cfg") or {}
    if config.get("attn_layer_idx"):
        raise ModelLoadError(f"{where}: attn_layer_idx {config['attn_layer_idx']} puts attention layers between "
                             "the Mamba-2 layers; hybrid models are not supported yet (only pure Mamba-2 stacks)")
    if config.get("d_intermediate", 0):
        raise ModelLoadError(f"{where}: d_intermediate {config['d_intermediate']!r} adds an MLP to every block; "
                             "only blocks of a Mamba-2 mixer alone (d_intermediate 0) are supported")
    if not flag(config, "rms_norm", where, True):
        raise ModelLoadError(f"{where}: rms_norm false (LayerNorm blocks) is not supported; only RMSNorm")
    nested = f"{where} ssm_cfg"
    for key, allowed in (("rmsnorm", True), ("norm_before_gate", False), ("D_has_hdim", False)):
        if ssm.get(key, allowed) != allowed:
            raise ModelLoadError(f"{nested}: {key} {ssm[key]!r} is not supported; only {allowed!r} (mamba_ssm's default)")
    d, expand = size(config, "d_model", where), size(ssm, "expand", nested, 2)
    if ssm.get("d_ssm") not in (None, expand * d):
        raise ModelLoadError(f"{nested}: d_ssm {ssm['d_ssm']!r} splits the mixer into an SSM and a gated MLP; "
                             f"only d_ssm null (= expand × d_model = {expand * d}) is supported")
    headdim = size(ssm, "headdim", nested, 64)
    if (expand * d) % headdim:
        raise ModelLoadError(f"{nested}: headdim {headdim} must divide expand × d_model = {expand * d}")
    ngroups = size(ssm, "ngroups", nested, 1)
    if (expand * d // headdim) % ngroups:
        raise ModelLoadError(f"{nested}: ngroups {ngroups} must divide the {expand * d // headdim} heads")
    multiple = size(config, "pad_vocab_size_multiple", where, 1)
    rows = -(-size(config, "vocab_size", where) // multiple) * multiple
    return Mamba2Config(d_model=d, n_layer=size(config, "n_layer", where), vocab_size=rows,
                        d_state=size(ssm, "d_state", nested, 128), d_conv=size(ssm, "d_conv", nested, 4),
                        expand=expand, headdim=headdim, ngroups=ngroups,
                        conv_bias=flag(ssm, "conv_bias", nested, True), bias=flag(ssm, "bias", nested, False),
                        norm_eps=_eps(config, "norm_epsilon", where),
                        dt_limit=_dt_limit(ssm.get("dt_limit", (0.0, math.inf)), "dt_limit", nested),
                        tie_embeddings=flag(config, "tie_embeddings", where, True))


def check_shapes(cfg: Mamba2Config, state: dict[str, torch.Tensor], where, *, mamba_ssm: bool) -> None:
    """Refuse a config whose sizes the weights contradict, naming the key and both values:
    the weights fix heads (A_log's length), d_inner (out_proj's input), g·n (conv1d's rows
    beyond d_inner) and the embedding's rows."""
    keys = ("ssm_cfg.headdim", "ssm_cfg.ngroups", "ssm_cfg.d_state") if mamba_ssm else ("head_dim", "n_groups", "state_size")
    A_log = next((t for k, t in state.items() if k.endswith("layers.0.mixer.A_log")), None)
    out = next((t for k, t in state.items() if k.endswith("layers.0.mixer.out_proj.weight")), None)
    conv = next((t for k, t in state.items() if k.endswith("layers.0.mixer.conv1d.weight")), None)
    embedding = next((t for k, t in state.items() if k.endswith(("embeddings.weight", "embedding.weight"))), None)
    if embedding is not None and embedding.shape[0] != cfg.vocab_size:
        key = "vocab_size padded to pad_vocab_size_multiple" if mamba_ssm else "vocab_size"
        raise ModelLoadError(f"{where}: {key} gives {cfg.vocab_size} embedding rows, the weights have "
                             f"{embedding.shape[0]}")
    if A_log is None or out is None or conv is None:
        return  # the load names the missing tensors
    d_in, heads = out.shape[1], A_log.shape[0]
    if d_in == cfg.d_inner and heads != cfg.nheads and d_in % heads == 0:
        raise ModelLoadError(f"{where}: {keys[0]} is {cfg.headdim} ({cfg.nheads} heads), the weights have "
                             f"{d_in // heads} ({heads} heads: A_log's length)")
    gn = (conv.shape[0] - d_in) // 2
    if d_in == cfg.d_inner and gn != cfg.ngroups * cfg.d_state:
        if gn % cfg.d_state == 0:
            raise ModelLoadError(f"{where}: {keys[1]} is {cfg.ngroups}, the weights have {gn // cfg.d_state} "
                                 f"(with {keys[2]} {cfg.d_state}: conv1d has {conv.shape[0]} rows = d_inner "
                                 f"{d_in} + 2 × ngroups × d_state)")
        raise ModelLoadError(f"{where}: {keys[2]} is {cfg.d_state}, the weights have {gn / cfg.ngroups:g} "
                             f"(with {keys[1]} {cfg.ngroups}: conv1d has {conv.shape[0]} rows = d_inner "
                             f"{d_in} + 2 × ngroups × d_state)")


def _eps(config: dict, key: str, where) -> float:
    eps = config.get(key, 1e-5)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 < eps < 1:
        raise ModelLoadError(f"{where}: {key} must be a number in (0, 1), got {eps!r}")
    return float(eps)


def _dt_limit(value, key: str, where) -> tuple[float, float]:
    try:  # transformers 5 writes inf as {"__float__": "Infinity"}, which JSON itself cannot hold
        low, high = (float(v["__float__"] if isinstance(v, dict) else v) for v in value)
    except (TypeError, ValueError):
        low, high = math.nan, math.nan
    if not 0 <= low < high:
        raise ModelLoadError(f"{where}: {key} must be [low, high] with 0 ≤ low < high, got {value!r}")
    return low, high


def count(cfg: Mamba2Config) -> int:
    """Parameters of our `Mamba2LM` for cfg."""
    d, d_in, gn, heads, k = cfg.d_model, cfg.d_inner, cfg.ngroups * cfg.d_state, cfg.nheads, cfg.d_conv
    mixer = (d * (2 * d_in + 2 * gn + heads) + ((2 * d_in + 2 * gn + heads) if cfg.bias else 0)  # in_proj
             + (d_in + 2 * gn) * (k + (1 if cfg.conv_bias else 0))  # conv1d
             + 3 * heads + d_in  # dt_bias, A_log, D, the gated norm
             + d_in * d + (d if cfg.bias else 0))  # out_proj
    heads_rows = 1 if cfg.tie_embeddings else 2
    return heads_rows * cfg.vocab_size * d + cfg.n_layer * (d + mixer) + d
