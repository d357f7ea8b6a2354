"""An interpretable Mamba (Gu & Dao 2023) whose selective SSM exposes every quantity as a hook point.

Glossary (shapes use these letters):
    b      batch size                         l      sequence length (T)
    d      d_model, the residual width        d_in   d_inner = expand · d_model
    n      d_state, state size per channel    r      dt_rank, rank of Δ's projection
    x      conv1d + SiLU output, the SSM input            [b, l, d_in]
    z      the gate, a second projection of the input     [b, l, d_in]
    Δ      delta = softplus(dt_proj(·)), the step size    [b, l, d_in]     (paper §3.2, Alg. 2)
    A      -exp(A_log), continuous state matrix           [d_in, n]        (not selective, §3.5.2)
    B, C   input-dependent write/read vectors              [b, l, n]
    Ā, B̄   A_bar = exp(ΔA), B_bar = ΔB                    [b, l, d_in, n]  (discretisation, eq. 4)
    w      write = B̄·x, what enters the state             [b, l, d_in, n]
    h      state after each position, h_t = Ā_t h_{t-1} + w_t   [b, l, d_in, n]
    y      C·h + D·x                                       [b, l, d_in]

Hook points per layer (``layers[i].hook_*`` and ``layers[i].mixer.hook_*``): resid_pre, norm,
gate, x, delta, B, C, A_bar, B_bar, write, h, h_readout, y, mixer_out, resid_post; on the model:
embed, final_norm, logits.

Edit semantics of the state:
    hook_h          an edit is read as the increment e_t = h'_t - h_t and fed into the recurrence,
                    h_t = Ā_t h_{t-1} + w_t + e_t, so it reaches every later position exactly as
                    noise added inside the scan would; replacing h at one position (activation
                    patching) therefore carries the patched state forward.
    hook_h_readout  read-out only: an edit changes y_t = C_t·h_t at the edited positions and
                    nothing else; the recurrence never sees it.

The incoming state (`MambaState`, mamba_ssm's inference cache): a block may run on positions
p.. alone, given what the positions before p hand on, the last d_conv − 1 inputs of the causal
conv and the state h_{p−1}; its outputs there equal the whole sequence's to fp32 rounding. The
model is causal, so this is all a change at p makes a block recompute (patching's `h` wavefront
runs the blocks above a patch so); `Prefix` keeps one forward's values to give that state at any p.

Ā, B̄, w and h are [b, l, d_in, n] (100 MB per layer at mamba-130m, l = 1024): they are
materialised only while a trace or a torch forward hook reads or edits one of them; otherwise
`scan.selective_scan` computes y directly.

On CPU without autograd, the conv + SiLU, softplus and the scan with its gate run as fused C
kernels in fp32 (`native.py`, mirroring mamba_ssm's CUDA kernels); on CUDA with the [cuda]
extra, mamba_ssm's and causal-conv1d's own kernels (`cuda.py`), the scan only while no SSM point
is requested (the same rule); elsewhere PyTorch computes the same sums, and a materialised state
on a GPU is scanned in parallel (`scan.linear_scan_parallel`), not position by position.

Precision (`MambaLM.cast_`, `load_model(dtype=...)`): in bfloat16 (or float16) the weights of the
matmuls (in_proj, x_proj, dt_proj, out_proj, the tied embedding / LM head) and of the norms are
in that dtype and the matmuls run in it; the conv, A_log, D, Δ after its softplus, B, C, the scan
and its state, y and the residual stream stay fp32, as mamba_ssm keeps them on GPU (its
residual_in_fp32). The norms compute in fp32 and hand the next matmul its dtype. Points in the
reduced dtype: norm, gate, mixer_out, final_norm and logits (`Model.logits` returns fp32).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import cuda, native
from ..base.hooks import HookPoint
from .scan import discretise, linear_scan, read_out, selective_scan, state_after, write_of

SSM_POINTS = ("A_bar", "B_bar", "write", "h", "h_readout")  # the registry: `families.mamba`
PREFIX_POINTS = ("norm", "x", "delta", "B")  # the hook points a `Prefix` is read from


@dataclass
class MambaConfig:
    d_model: int
    n_layer: int
    vocab_size: int  # rows of the embedding, padded; the tokenizer's vocabulary may be smaller
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None  # None => ceil(d_model / 16), as in mamba_ssm
    conv_bias: bool = True
    bias: bool = False
    norm_eps: float = 1e-5

    def __post_init__(self):
        if self.dt_rank is None:
            self.dt_rank = math.ceil(self.d_model / 16)

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model


@dataclass(frozen=True)
class MambaState:
    """What a block's positions before p hand on to p..: conv, the in_proj x half before the conv at
    the last d_conv − 1 (or fewer, near the start) positions [b or 1, ≤ d_conv − 1, d_in], and h,
    the SSM state after position p − 1 [b or 1, d_in, n] (None at p = 0: zero)."""
    conv: torch.Tensor
    h: torch.Tensor | None


class Prefix:
    """One forward's values at one block, from which its incoming state at any position is read.

    x_in: in_proj's x half before the conv [1, T, d_in] (from the block's `norm` point), x and
    delta [1, T, d_in], B [1, T, n]: the block's `PREFIX_POINTS` in that forward. `state(p)`
    scans the positions since the last state asked for (patching asks for p in rising order).
    """

    def __init__(self, block: "MambaBlock", seen: dict[str, torch.Tensor]):
        mixer = block.mixer
        d_in, w, b = mixer.D.shape[0], mixer.in_proj.weight, mixer.in_proj.bias
        self.x_in = F.linear(seen["norm"], w[:d_in], None if b is None else b[:d_in])
        self.x, self.delta, self.B = seen["x"].float(), seen["delta"].float(), seen["B"].float()
        self.A = -torch.exp(mixer.A_log.float())
        self.history = mixer.conv1d.weight.shape[-1] - 1
        self._at, self._h = 0, None  # the state after position _at − 1

    def state(self, p: int) -> MambaState:
        if p < self._at:
            self._at, self._h = 0, None
        if p > self._at:
            s = slice(self._at, p)
            self._h = state_after(self.x[:, s], self.delta[:, s], self.A.to(self.x.device), self.B[:, s], self._h)
            self._at = p
        return MambaState(self.x_in[:, max(0, p - self.history):p], self._h)


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        """In fp32 whatever the dtypes; the result in the weight's dtype, the next matmul's."""
        x = x.float()
        return ((x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)) * self.weight.float()).to(self.weight.dtype)


class MambaMixer(nn.Module):
    """in_proj → (conv1d → SiLU → selective SSM) ⊙ SiLU(z) → out_proj; mirrors mamba_ssm's `Mamba`."""

    def __init__(self, cfg: MambaConfig):
        super().__init__()
        d_in, n = cfg.d_inner, cfg.d_state
        self.dt_rank, self.d_state = cfg.dt_rank, n
        self.in_proj = nn.Linear(cfg.d_model, 2 * d_in, bias=cfg.bias)
        self.conv1d = nn.Conv1d(d_in, d_in, cfg.d_conv, groups=d_in, padding=cfg.d_conv - 1,
                                bias=cfg.conv_bias)
        self.x_proj = nn.Linear(d_in, cfg.dt_rank + 2 * n, bias=False)
        self.dt_proj = nn.Linear(cfg.dt_rank, d_in, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(d_in, 1))
        self.D = nn.Parameter(torch.ones(d_in))
        self.out_proj = nn.Linear(d_in, cfg.d_model, bias=cfg.bias)
        for name in ("gate", "x", "delta", "B", "C") + SSM_POINTS + ("y",):
            setattr(self, f"hook_{name}", HookPoint())

    def forward(self, u: torch.Tensor, last_only: bool = False, state: MambaState | None = None) -> torch.Tensor:
        """u [b, l, d] → [b, l, d], or [b, 1, d] (the last position) with last_only; state: what
        the positions before u's hand on (module docstring), default none (u starts the sequence).

        last_only serves callers that read nothing else, like the noise sweep's final block: the
        scan still runs over every position, but the gate half of in_proj and out_proj run at the
        last one only (in_proj is then applied through its weight, which nnsight does not see).
        """
        u = u.to(self.in_proj.weight.dtype)
        if last_only:
            d_in, w, bias = self.D.shape[0], self.in_proj.weight, self.in_proj.bias
            x = F.linear(u, w[:d_in], None if bias is None else bias[:d_in])
            z = F.linear(u[:, -1:], w[d_in:], None if bias is None else bias[d_in:])
        else:
            x, z = self.in_proj(u).chunk(2, dim=-1)
        return self.mix(x, z, last_only, state)

    def mix(self, x: torch.Tensor, z: torch.Tensor, last_only: bool = False,
            state: MambaState | None = None) -> torch.Tensor:
        """The mixer after in_proj: x [b, l, d_in] and the gate z [b, l, d_in] ([b, 1, d_in] with
        last_only) → [b, l, d] ([b, 1, d]); for callers that compute in_proj their own way."""
        wd = self.out_proj.weight.dtype  # the matmuls' dtype; everything between them is fp32
        z = self.hook_gate(z)
        # the conv, the SSM and their points in fp32 whatever the weights' dtype, as mamba_ssm's kernels
        if state is not None and state.conv.shape[1]:  # the conv reads the positions before x's too
            k = state.conv.shape[1]
            history = state.conv.to(x.dtype).expand(x.shape[0], -1, -1)
            x = conv_silu(torch.cat([history, x], dim=1), self.conv1d.weight, self.conv1d.bias)[:, k:]
        else:
            x = conv_silu(x, self.conv1d.weight, self.conv1d.bias)
        x = self.hook_x(x)
        dt, B, C = self.x_proj(x.to(wd)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = self.hook_delta(softplus(self.dt_proj(dt).float()))
        B, C = self.hook_B(B.float()), self.hook_C(C.float())
        A = -torch.exp(self.A_log.float())
        ssm_in = (x, delta, A, B, C)
        h0 = None if state is None else state.h
        if any(getattr(self, f"hook_{p}").requested() for p in SSM_POINTS):
            y = self._ssm_materialised(*ssm_in, h0)
        elif not (last_only or self.hook_y.requested()):
            # nothing reads y before the gate: the scan applies it, as selective_scan_fn(z=z) does
            return self.out_proj(selective_scan(*ssm_in, self.D.float(), z=z, h0=h0).to(wd))
        else:
            y = selective_scan(*ssm_in, self.D.float(), h0=h0)
        y = self.hook_y(y)
        return self.out_proj(((y[:, -1:] if last_only else y) * F.silu(z.float())).to(wd))

    def _ssm_materialised(self, x, delta, A, B, C, h0=None):
        A_bar, B_bar = discretise(delta, A, B)
        A_bar = self.hook_A_bar(A_bar)
        B_bar = self.hook_B_bar(B_bar)
        write = self.hook_write(write_of(B_bar, x))
        h = linear_scan(A_bar, write, h0)
        if self.hook_h.requested():
            seen = self.hook_h(h.clone())
            increment = seen - h
            if increment.any():
                h = h + linear_scan(A_bar, increment)
        h = self.hook_h_readout(h)
        return read_out(h, C, self.D.float(), x)


def conv_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """SiLU(causal_conv(x)) in fp32 (x in the weights' dtype or fp32), in one pass where a kernel
    can take the tensors: the C kernel on CPU (reading a bf16 x as it is), causal-conv1d's on CUDA."""
    if native.usable(weight, bias, bf16=(x,)):
        return native.causal_conv1d_silu(x, weight, bias)
    x = x.float()
    if cuda.conv_usable(x, weight, bias):
        return cuda.causal_conv1d_silu(x, weight, bias)
    return F.silu(causal_conv(x, weight, bias))


def softplus(x: torch.Tensor) -> torch.Tensor:
    """Δ's activation; the C kernel's runs ~4× faster than torch's on CPU (within 2 fp32 ulps of
    the exact value, torch's within 1)."""
    return native.elementwise("softplus", x) if native.usable(x) else F.softplus(x)


def causal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Depthwise causal conv1d in [b, l, d_in] layout: Σ_j weight[:, j] · x[t - (k-1) + j] + bias.

    The same sums as `nn.Conv1d(padding=k-1)[..., :l]`, without its two [b, d_in, l] transposes
    or a zero-padded copy, which cost more than the k multiply-adds; `conv1d` keeps the
    checkpoint's weights.
    """
    l, k = x.shape[1], weight.shape[-1]
    w = weight[:, 0]  # [d_in, k]
    y = x * w[:, k - 1] if bias is None else torch.addcmul(bias, x, w[:, k - 1])
    for j in range(k - 1):
        shift = k - 1 - j  # tap j reads `shift` positions back; earlier positions see the zero padding
        if shift < l:
            y[:, shift:].addcmul_(x[:, :l - shift], w[:, j])
    return y


class MambaBlock(nn.Module):
    """Norm → Mixer → Add (not mamba_ssm's fused Add → Norm, which computes the same sums)."""

    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mixer = MambaMixer(cfg)
        self.hook_resid_pre, self.hook_norm = HookPoint(), HookPoint()
        self.hook_mixer_out, self.hook_resid_post = HookPoint(), HookPoint()

    def forward(self, resid: torch.Tensor, last_only: bool = False, state: MambaState | None = None) -> torch.Tensor:
        """resid [b, l, d] → [b, l, d], or [b, 1, d] with last_only; state: what the positions
        before resid's hand on (`MambaMixer.forward`). The hook points see resid's positions only."""
        resid = self.hook_resid_pre(resid)
        out = self.hook_mixer_out(self.mixer(self.hook_norm(self.norm(resid)), last_only, state))
        return self.hook_resid_post((resid[:, -1:] if last_only else resid) + out)


class MambaLM(nn.Module):
    """Embedding → blocks → RMSNorm → LM head tied to the embedding. forward(ids) → [b, l, vocab_size]."""

    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(MambaBlock(cfg) for _ in range(cfg.n_layer))
        self.norm_f = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.embeddings.weight
        self.hook_embed, self.hook_final_norm, self.hook_logits = HookPoint(), HookPoint(), HookPoint()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        resid = self.hook_embed(self.embeddings(input_ids).float())  # the residual stream is fp32
        for layer in self.layers:
            resid = layer(resid)
        return self.hook_logits(self.lm_head(self.hook_final_norm(self.norm_f(resid))))

    def cast_(self, dtype: torch.dtype) -> "MambaLM":
        """Weights in `dtype` where mamba_ssm has them in the model's dtype: every nn.Linear (in,
        x, dt and out projections), the embedding (the tied LM head) and the norms. conv1d,
        A_log and D keep their fp32 values (cast back from a reduced dtype they would stay
        rounded); see the module docstring for what runs in which dtype."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding, RMSNorm)):
                module.to(dtype)
        return self

    def load_checkpoint(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load transformers (`backbone.embeddings.*`) or mamba_ssm (`backbone.embedding.*`) weights.

        Every expected tensor must be present with the expected shape: a silent partial load
        would give a model that runs and means nothing.
        """
        renamed = {}
        for key, tensor in state_dict.items():
            key = key.removeprefix("backbone.")
            if key.startswith("embedding."):
                key = "embeddings." + key.removeprefix("embedding.")
            renamed[key] = tensor
        if "lm_head.weight" in renamed and not torch.equal(renamed["lm_head.weight"], renamed.get("embeddings.weight")):
            raise ValueError("checkpoint has an untied lm_head; this Mamba ties it to the embedding")
        renamed.pop("lm_head.weight", None)
        own = {k: v for k, v in self.state_dict().items() if k != "lm_head.weight"}
        missing = sorted(own.keys() - renamed.keys())
        unexpected = sorted(renamed.keys() - own.keys())
        if missing or unexpected:
            raise ValueError(f"checkpoint does not match a Mamba of this config: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        for key, tensor in renamed.items():
            if tensor.shape != own[key].shape:
                raise ValueError(f"checkpoint tensor {key} has shape {tuple(tensor.shape)}, "
                                 f"expected {tuple(own[key].shape)}")
        self.load_state_dict({**renamed, "lm_head.weight": renamed["embeddings.weight"]})


@torch.no_grad()
def init_random_(model: nn.Module, *, seed: int, n_layer: int, std: float = 0.02) -> nn.Module:
    """Random weights at a trained model's scale, for real-shape benchmarks and tests.

    PyTorch's default (kaiming) init lets the residual stream of a 24-layer Mamba grow to ~10³,
    where fp32 rounding alone moves logits by 10⁻³; GPT-style N(0, std²) with out_proj scaled
    by 1/√(2·n_layer) (mamba_ssm's `_init_weights` rescaling) keeps it O(1), as in real checkpoints.
    Works on our `MambaLM`, transformers' `MambaForCausalLM` and mamba_ssm's `MambaLMHeadModel`.
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith(("in_proj.weight", "x_proj.weight", "embeddings.weight", "embedding.weight")):
            p.copy_(torch.randn(p.shape, generator=g) * std)
        elif name.endswith("out_proj.weight"):
            p.copy_(torch.randn(p.shape, generator=g) * std / math.sqrt(2 * n_layer))
    return model
