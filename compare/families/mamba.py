"""Mamba (Gu & Dao 2023) on our own module tree (`compare.ssm.mamba.MambaLM`), whose hook points are
`HookPoint` modules; transformers' *-hf checkpoints and original mamba_ssm ones load into it.

Points per layer `layers[l]` (shapes in `compare.ssm.mamba`'s glossary): the block's resid_pre, norm,
mixer_out, resid_post; the mixer's gate, x, delta, B, C, A_bar, B_bar, write, h, h_readout, y
(`compare.ssm.mamba` gives the edit semantics of h and h_readout). Model level: embed, final_norm, logits.

Noise is affine in the block's output (`Point.affine`) on B, C, B̄, w, h (increments) and
h_readout, which enter y linearly, and on y, mixer_out and resid_post, which reach the residual
through the clean gate and out_proj only; Δ, Ā, x, the gate and the norms act through
exp/SiLU/softplus. After an affine injection the next block runs on rays (`rays`).

Parameters (the loader's memory check), with d the residual width, L layers, V embedding rows:
    V·d + L·(d + mixer) + d, the mixer being in_proj 2·d·d_in, conv1d d_in·k + d_in, x_proj
    d_in·(r + 2n), dt_proj r·d_in + d_in, A_log d_in·n, D d_in, out_proj d_in·d
    (n state size, r dt_rank, k conv kernel; plus biases where the config asks).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..base import checkpoint
from ..base.checkpoint import ModelLoadError, flag, size
from ..ssm.mamba import MambaConfig, MambaLM
from ..ssm.scan import alpha_of
from .base import FP32_BYTES, Family, Point, model_points


def _p(name, owner, shape, **kw):
    return Point(name, f"{owner}hook_{name}", shape, **kw)


BLOCK, MIXER = "layers.{l}.", "layers.{l}.mixer."
SSM = "[b, l, d_in, n]"


class MambaFamily(Family):
    name, title = "mamba", "Mamba"
    aliases = {f"mamba-{s}": f"state-spaces/mamba-{s}-hf" for s in ("130m", "370m", "790m", "1.4b", "2.8b")}
    tokenizer = "EleutherAI/gpt-neox-20b"
    blocks_path, norm_path = "layers", "norm_f"
    rays = True
    mixing = "ssm"
    default_component = "h"  # the state h(t), as the thesis noised Mamba
    attribution = ("resid_pre", "h", "resid_post")
    h_wavefront = True
    attention_points = ("x", "delta", "B", "C", "y")
    points = (
        _p("resid_pre", BLOCK, "[b, l, d]"),
        _p("norm", BLOCK, "[b, l, d]"),
        _p("gate", MIXER, "[b, l, d_in]"),
        _p("x", MIXER, "[b, l, d_in]"),
        _p("delta", MIXER, "[b, l, d_in]"),
        _p("B", MIXER, "[b, l, n]", affine=True),
        _p("C", MIXER, "[b, l, n]", affine=True),
        _p("A_bar", MIXER, SSM, ssm=True),
        _p("B_bar", MIXER, SSM, affine=True, ssm=True),
        _p("write", MIXER, SSM, affine=True, ssm=True),
        _p("h", MIXER, SSM, affine=True, ssm=True, grad_at="write", read_at="h_readout"),
        _p("h_readout", MIXER, SSM, affine=True, ssm=True),
        _p("y", MIXER, "[b, l, d_in]", affine=True),
        _p("mixer_out", BLOCK, "[b, l, d]", affine=True),
        _p("resid_post", BLOCK, "[b, l, d]", affine=True),
    ) + model_points("hook_embed", "hook_final_norm", "hook_logits")

    def blocks_from(self, module, start, resid, entry, stop=None, last_only=False):
        blocks = module.layers
        for i in range(start, len(blocks) if stop is None else stop):
            resid = blocks[i](resid, last_only=last_only and i == len(blocks) - 1)
        return resid

    def ray_projection(self, module, layer, value):
        """in_proj's matmul, without bias, after the block's RMSNorm weight g: W(g ⊙ value),
        [*, T, 2 d_in], in the weights' dtype (bf16 under dtype="bfloat16", where the residual
        stream is fp32)."""
        block = module.layers[layer]
        weight = block.mixer.in_proj.weight
        return torch.nn.functional.linear((value * block.norm.weight).to(weight.dtype), weight)

    def block_on_rays(self, module, layer, inputs, level, clean_proj, response_proj, last_only):
        """RMSNorm only scales each row, by 1/rms(row), before its weight g; so
        in_proj(RMSNorm(inputs)) = (W(g ⊙ clean) + level · W(g ⊙ response)) / rms(inputs) + bias."""
        block = module.layers[layer]
        inv_rms = torch.rsqrt(inputs.pow(2).mean(-1, keepdim=True) + block.norm.eps)
        xz = torch.addcmul(clean_proj, level[:, None, None], response_proj).mul_(inv_rms)
        if block.mixer.in_proj.bias is not None:
            xz += block.mixer.in_proj.bias
        x, z = xz.chunk(2, dim=-1)
        out = block.mixer.mix(x, z[:, -1:] if last_only else z, last_only)
        return (inputs[:, -1:] if last_only else inputs) + out

    def embed(self, module, ids):
        return module.embeddings(ids).float(), (), {}  # the residual stream is fp32 (`MambaLM.forward`)

    def ssm_parameters(self, module, layer):
        mixer = module.layers[layer].mixer
        return -torch.exp(mixer.A_log.float()), mixer.D.float()

    def hidden_attention_terms(self, module, layer, seen, units):
        """Per channel of d_in: α by the scan's own recurrence (`scan.alpha_of`)."""
        A, D = self.ssm_parameters(module, layer)
        x, delta = seen["x"][0][:, units].float(), seen["delta"][0][:, units].float()
        B, C = seen["B"][0].float(), seen["C"][0].float()
        alpha = alpha_of(delta, A[units].to(delta.device), B, C)
        return alpha, x, D[units], seen["y"][0][:, units].float()

    def y_response(self, module, layer, dy, gate):
        """The change of block `layer`'s output for a change dy of its y [b, l, d_in] (the block
        is affine in y): out_proj's weight on dy ⊙ SiLU(gate), the gate [1, l, d_in] of the run."""
        mixer = module.layers[layer].mixer
        return torch.nn.functional.linear(dy.to(gate.dtype) * torch.nn.functional.silu(gate), mixer.out_proj.weight)

    def dims(self, config):
        return {"d": config.d_model, "d_in": config.d_inner, "n": config.d_state, "V": config.vocab_size}

    def layer_bytes(self, config, T, *, ssm=False):
        state = config.d_inner * config.d_state
        # materialised SSM: Ā, B̄, w, h, its copy and the increment's scan; else at most the
        # PyTorch scan's three buffers (Ā and two of w/h), one position each once a batch fills
        # CHUNK_BYTES (the C kernel needs one state per thread)
        ssm_bytes = 9 * T * state if ssm else 3 * state
        return FP32_BYTES * (ssm_bytes + 12 * T * config.d_inner + config.d_model)

    def grad_bytes(self, config, T):
        # under autograd the scan is materialised and keeps Ā, B̄ and h per layer (`scan.LinearScan`
        # keeps Ā and h, the write B̄ · x keeps B̄), plus the [l, d_in] activations
        return FP32_BYTES * (3 * T * config.d_inner * config.d_state + 12 * T * config.d_inner + config.d_model)

    def matches(self, config):
        model_type = config.get("model_type")
        ssm = config.get("ssm_cfg")
        if isinstance(ssm, dict) and ssm.get("layer") == "Mamba2":
            return False  # `families.mamba2`
        return model_type == "mamba" or (model_type is None and bool(config.keys() & {"d_model", "n_layer", "ssm_cfg"}))

    def parameter_count(self, config, directory):
        return count(mamba_config(config, directory))

    def build(self, directory, config):
        cfg = mamba_config(config, directory)
        checkpoint.check_memory(count(cfg), directory)
        path, state = checkpoint.read_weights(directory)
        model = MambaLM(cfg)
        try:
            model.load_checkpoint(state)
        except ValueError as err:
            raise ModelLoadError(f"{path}: {err}") from None
        return model

    def embedding(self, module):
        return module.embeddings


MAMBA = MambaFamily()


def mamba_config(config: dict, directory: Path) -> MambaConfig:
    """Our `MambaConfig` from a transformers Mamba (*-hf) or an original mamba_ssm config.json."""
    where = directory / "config.json"
    if config.get("model_type") == "mamba":
        if config.get("hidden_act", "silu") != "silu":
            raise ModelLoadError(f"{where}: hidden_act {config['hidden_act']!r} is not supported (only silu)")
        eps = config.get("layer_norm_epsilon", 1e-5)
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 < eps < 1:
            raise ModelLoadError(f"{where}: layer_norm_epsilon must be a number in (0, 1), got {eps!r}")
        return MambaConfig(d_model=size(config, "hidden_size", where),
                           n_layer=size(config, "num_hidden_layers", where),
                           vocab_size=size(config, "vocab_size", where),
                           d_state=size(config, "state_size", where, 16),
                           d_conv=size(config, "conv_kernel", where, 4),
                           expand=size(config, "expand", where, 2),
                           dt_rank=_dt_rank(config, "time_step_rank", where),
                           conv_bias=flag(config, "use_conv_bias", where, True),
                           bias=flag(config, "use_bias", where, False), norm_eps=eps)
    ssm = config.get("ssm_cfg") or {}
    if not isinstance(ssm, dict):
        raise ModelLoadError(f"{where}: ssm_cfg must be an object, got {ssm!r}")
    if ssm.get("layer", "Mamba1") != "Mamba1" or not flag(config, "rms_norm", where, True):
        raise ModelLoadError(f"{directory}: only Mamba-1 checkpoints with RMSNorm are supported")
    multiple = size(config, "pad_vocab_size_multiple", where, 1)
    rows = -(-size(config, "vocab_size", where) // multiple) * multiple
    nested = f"{where} ssm_cfg"
    return MambaConfig(d_model=size(config, "d_model", where), n_layer=size(config, "n_layer", where),
                       vocab_size=rows, d_state=size(ssm, "d_state", nested, 16), d_conv=size(ssm, "d_conv", nested, 4),
                       expand=size(ssm, "expand", nested, 2), dt_rank=_dt_rank(ssm, "dt_rank", nested),
                       conv_bias=flag(ssm, "conv_bias", nested, True), bias=flag(ssm, "bias", nested, False))


def _dt_rank(config: dict, key: str, where) -> int | None:
    return None if config.get(key, "auto") == "auto" else size(config, key, where)


def count(cfg: MambaConfig) -> int:
    """Parameters of our `MambaLM` for cfg (the LM head is tied to the embedding)."""
    d, d_in, n, r, k = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv
    mixer = (d * 2 * d_in + (2 * d_in if cfg.bias else 0)  # in_proj
             + d_in * k + (d_in if cfg.conv_bias else 0)  # conv1d
             + d_in * (r + 2 * n)  # x_proj
             + r * d_in + d_in  # dt_proj
             + d_in * n + d_in  # A_log, D
             + d_in * d + (d if cfg.bias else 0))  # out_proj
    return cfg.vocab_size * d + cfg.n_layer * (d + mixer) + d
