"""An interpretable Mamba-2 (Dao & Gu 2024, "Transformers are SSMs") whose SSD layer exposes every
quantity as a hook point; mirrors mamba_ssm's `Mamba2` module (and transformers' `Mamba2Mixer`).

Glossary (shapes use these letters; b, l, d, d_in, n as in `compare.ssm.mamba`):
    heads  nheads = d_in / p, the SSM heads        p      headdim, channels per head
    g      ngroups; B and C are per group, shared by its heads/g heads
    z      the gate, a projection of the input                          [b, l, d_in]
    x      conv1d + SiLU of in_proj's x part, split into heads          [b, l, heads, p]
    B, C   conv1d + SiLU of in_proj's B, C parts, per group             [b, l, g, n]
    Δ      dt = clamp(softplus(dt_proj + dt_bias), dt_limit), per head  [b, l, heads]
    A      -exp(A_log): one scalar per head (Mamba-1: [d_in, n]), §7.1 [heads]
    Ā      A_bar = exp(Δ·A), a scalar decay per head and position       [b, l, heads]
    w      write = Δ·x ⊗ B, what enters the state                       [b, l, heads, p, n]
    h      h_t = Ā_t h_{t-1} + w_t                                      [b, l, heads, p, n]
    y      C·h + D·x (D one scalar per head)                            [b, l, heads, p]
    norm_g gated RMSNorm of y ⊙ SiLU(z), over groups of d_in/g channels [b, l, d_in]

The block, in_proj → (z, xBC, dt); causal conv1d + SiLU over xBC; the SSD scan (`compare.ssm.ssd`);
gated RMSNorm; out_proj, is Norm → Mixer → Add as `compare.ssm.mamba.MambaBlock`.

Hook points per layer (``layers[i].hook_*`` and ``layers[i].mixer.hook_*``): resid_pre, norm,
gate, x, B, C, dt, A_bar, write, h, h_readout, y, gated_norm, mixer_out, resid_post; on the model:
embed, final_norm, logits. h and h_readout have Mamba-1's edit semantics (`compare.ssm.mamba`): an
edit of h is an increment fed into the recurrence (it reaches every later position; patching
carries the patched state forward); an edit of h_readout changes y at the edited positions only.

A_bar, write, h and h_readout are materialised only while something reads or edits one of them
(`HookPoint.requested`); y then comes from that h (`ssd.read_out`), not from a second scan.
Otherwise the chunked SSD form computes y directly with GEMMs (`ssd.ssd_chunked`).

Precision (`Mamba2LM.cast_`) as Mamba-1's: the matmul weights and norms in the chosen dtype; the
conv, A_log, D, dt_bias, the scan, its state and the residual stream in fp32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..base.hooks import HookPoint
from .mamba import RMSNorm, conv_silu, softplus
from .ssd import discretise, read_out, ssd_chunked, states, write_of

SSM_POINTS = ("A_bar", "write", "h", "h_readout")  # materialise the state (`families.mamba2`)


@dataclass
class Mamba2Config:
    d_model: int
    n_layer: int
    vocab_size: int  # rows of the embedding, padded; the tokenizer's vocabulary may be smaller
    d_state: int = 128
    d_conv: int = 4
    expand: int = 2
    headdim: int = 64
    ngroups: int = 1
    conv_bias: bool = True
    bias: bool = False
    norm_eps: float = 1e-5
    dt_limit: tuple[float, float] = (0.0, math.inf)
    tie_embeddings: bool = True

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim


class GatedRMSNorm(nn.Module):
    """RMSNorm(y ⊙ SiLU(z)) over groups of `group` channels (mamba_ssm's RMSNormGated with
    norm_before_gate=False), in fp32; the result in the weight's dtype."""

    def __init__(self, d: int, group: int, eps: float):
        super().__init__()
        self.group, self.eps = group, eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        v = y.float() * F.silu(z.float())
        grouped = v.unflatten(-1, (-1, self.group))
        v = (grouped * torch.rsqrt(grouped.pow(2).mean(-1, keepdim=True) + self.eps)).flatten(-2)
        return (v * self.weight.float()).to(self.weight.dtype)


class Mamba2Mixer(nn.Module):
    """in_proj → conv1d + SiLU → SSD scan → gated RMSNorm → out_proj; mamba_ssm's `Mamba2`."""

    def __init__(self, cfg: Mamba2Config):
        super().__init__()
        d_in, heads, gn = cfg.d_inner, cfg.nheads, cfg.ngroups * cfg.d_state
        self.heads, self.headdim, self.groups, self.d_state = heads, cfg.headdim, cfg.ngroups, cfg.d_state
        self.dt_limit = tuple(cfg.dt_limit)
        self.in_proj = nn.Linear(cfg.d_model, 2 * d_in + 2 * gn + heads, bias=cfg.bias)
        self.conv1d = nn.Conv1d(d_in + 2 * gn, d_in + 2 * gn, cfg.d_conv, groups=d_in + 2 * gn,
                                padding=cfg.d_conv - 1, bias=cfg.conv_bias)
        self.dt_bias = nn.Parameter(torch.zeros(heads))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, heads + 1, dtype=torch.float32)))
        self.D = nn.Parameter(torch.ones(heads))
        self.norm = GatedRMSNorm(d_in, d_in // cfg.ngroups, cfg.norm_eps)
        self.out_proj = nn.Linear(d_in, cfg.d_model, bias=cfg.bias)
        for name in ("gate", "x", "B", "C", "dt") + SSM_POINTS + ("y", "gated_norm"):
            setattr(self, f"hook_{name}", HookPoint())

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u [b, l, d] → [b, l, d]."""
        d_in, gn = self.heads * self.headdim, self.groups * self.d_state
        z, xBC, dt = self.in_proj(u.to(self.in_proj.weight.dtype)).split([d_in, d_in + 2 * gn, self.heads], -1)
        z = self.hook_gate(z)
        # the conv, the SSM and their points in fp32 whatever the weights' dtype, as mamba_ssm's kernels
        x, B, C = conv_silu(xBC, self.conv1d.weight, self.conv1d.bias).split([d_in, gn, gn], -1)
        x = self.hook_x(x.unflatten(-1, (self.heads, self.headdim)))
        B = self.hook_B(B.unflatten(-1, (self.groups, self.d_state)))
        C = self.hook_C(C.unflatten(-1, (self.groups, self.d_state)))
        dt = softplus(dt.float() + self.dt_bias.float())
        if self.dt_limit != (0.0, math.inf):
            dt = dt.clamp(*self.dt_limit)
        dt = self.hook_dt(dt)
        A, D = -torch.exp(self.A_log.float()), self.D.float()
        if any(getattr(self, f"hook_{p}").requested() for p in SSM_POINTS):
            y = materialised_ssd(self, x, dt, A, B, C, D)
        else:
            y = ssd_chunked(x, dt, A, B, C, D)
        return self.output(self.hook_y(y), z)

    def output(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The mixer's output [b, l, d] from y [b, l, heads, p] and the gate z [b, l, d_in]: gated
        RMSNorm, out_proj (also the restart from y, `families.mamba2.block_from_y`)."""
        out = self.hook_gated_norm(self.norm(y.flatten(-2), z))
        return self.out_proj(out.to(self.out_proj.weight.dtype))



def materialised_ssd(mixer: nn.Module, x, dt, A, B, C, D) -> torch.Tensor:
    """y [b, l, heads, p] from the materialised state, through `mixer`'s hook points A_bar, write,
    h and h_readout (x [b, l, heads, p], dt [b, l, heads], A, D [heads], B, C [b, l, g, n], fp32).

    An edit of h is an increment fed into the recurrence: it decays into every later state, so
    the state at the edited position is the edited one and later ones carry it; an edit of
    h_readout changes y at the edited positions only. Also the hybrids' Mamba-2 mixers' path
    (`families.hybrid`)."""
    A_bar = mixer.hook_A_bar(discretise(dt, A))
    write = mixer.hook_write(write_of(dt, x, B))
    h = states(A_bar, write)
    if mixer.hook_h.requested():
        seen = mixer.hook_h(h.clone())
        increment = seen - h
        if increment.any():  # the edit enters the recurrence: it decays into every later state
            h = h + states(A_bar, increment)
    h = mixer.hook_h_readout(h)
    return read_out(h, C, D, x)


class Mamba2Block(nn.Module):
    """Norm → Mixer → Add, as `compare.ssm.mamba.MambaBlock`."""

    def __init__(self, cfg: Mamba2Config):
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mixer = Mamba2Mixer(cfg)
        self.hook_resid_pre, self.hook_norm = HookPoint(), HookPoint()
        self.hook_mixer_out, self.hook_resid_post = HookPoint(), HookPoint()

    def forward(self, resid: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """resid [b, l, d] → [b, l, d], or [b, 1, d] (the last position) with last_only: the whole
        block runs (the scan needs every position); only its result is cut."""
        resid = self.hook_resid_pre(resid)
        out = self.hook_mixer_out(self.mixer(self.hook_norm(self.norm(resid))))
        resid = self.hook_resid_post(resid + out)
        return resid[:, -1:] if last_only else resid


class Mamba2LM(nn.Module):
    """Embedding → blocks → RMSNorm → LM head (tied to the embedding unless the config unties it)."""

    def __init__(self, cfg: Mamba2Config):
        super().__init__()
        self.config = cfg
        self.embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Mamba2Block(cfg) for _ in range(cfg.n_layer))
        self.norm_f = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embeddings.weight
        self.hook_embed, self.hook_final_norm, self.hook_logits = HookPoint(), HookPoint(), HookPoint()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        resid = self.hook_embed(self.embeddings(input_ids).float())  # the residual stream is fp32
        for layer in self.layers:
            resid = layer(resid)
        return self.hook_logits(self.lm_head(self.hook_final_norm(self.norm_f(resid))))

    def cast_(self, dtype: torch.dtype) -> "Mamba2LM":
        """Weights in `dtype` where mamba_ssm has them in the model's dtype (every nn.Linear, the
        embedding, the norms); conv1d, A_log, D and dt_bias keep their fp32 values."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding, RMSNorm, GatedRMSNorm)):
                module.to(dtype)
        return self

    def load_checkpoint(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load transformers (`backbone.embeddings.*`) or mamba_ssm (`backbone.embedding.*`) weights.

        Every expected tensor must be present with the expected shape (the family names the
        config key behind a shape that differs, `families.mamba2.check_shapes`).
        """
        renamed = {}
        for key, tensor in state_dict.items():
            key = key.removeprefix("backbone.")
            if key.startswith("embedding."):
                key = "embeddings." + key.removeprefix("embedding.")
            renamed[key] = tensor
        if self.config.tie_embeddings:
            head = renamed.pop("lm_head.weight", None)
            if head is not None and not torch.equal(head, renamed.get("embeddings.weight")):
                raise ValueError("checkpoint has an untied lm_head where the config ties it to the embedding")
        own = self.state_dict()
        if self.config.tie_embeddings:
            own = {k: v for k, v in own.items() if k != "lm_head.weight"}
        missing = sorted(own.keys() - renamed.keys())
        unexpected = sorted(renamed.keys() - own.keys())
        if missing or unexpected:
            raise ValueError(f"checkpoint does not match a Mamba-2 of this config: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        for key, tensor in renamed.items():
            if tensor.shape != own[key].shape:
                raise ValueError(f"checkpoint tensor {key} has shape {tuple(tensor.shape)}, "
                                 f"expected {tuple(own[key].shape)}")
        if self.config.tie_embeddings:
            renamed["lm_head.weight"] = renamed["embeddings.weight"]
        self.load_state_dict(renamed)
