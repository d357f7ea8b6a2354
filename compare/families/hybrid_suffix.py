"""A hybrid block run on positions p.. only, from what one full run of it left at positions < p.

A causal block's output at positions ≥ p depends on its input at positions < p only through what
its mixers carry forward: attention reads their keys and values, a Mamba-2 mixer its state h_{p-1}
and the causal conv the K − 1 inputs before p. `Prefix` holds these from one full run of the block
(`Prefix.record`) and is handed to transformers' block as its `cache`:
    attention   asks it for keys and values (`update`, transformers' Cache protocol), which
                prepends the recorded ones of positions < p to the rows' own;
    Mamba-2     the hooked mixer (`hybrid.hook_mixer`) runs `mixer_suffix` with it: the conv reads
                the recorded inputs before p, the scan starts from the recorded state h_{p-1}.
So block(resid[:, p:], cache=prefix.at(p)) equals block(resid)[:, p:] to fp32 rounding for every
batch row whose positions < p are the recorded run's (`analyses.patching`'s suffix wavefront).

Letters as in `hybrid`'s glossary (H SSM heads of p channels, g groups of B and C of n, the
conv's K taps over conv_dim = d_in + 2·g·n channels); R rows, l = T − p positions.
"""
from __future__ import annotations

import torch
from torch import nn

from ..ssm.ssd import CHUNK, discretise, ssd_scan, write_of


class Prefix:
    """What positions < p of one recorded run leave to a block's mixers (module docstring).

    keys, values   attention's, after rotary and any key multiplier   [1, kv_heads, T, head]
    xBC            the Mamba-2 conv's input                           [1, T, conv_dim]
    x, dt, B       the scan's inputs, for the state before p          [1, T, H, p], [1, T, H], [1, T, g, n]
    """

    def __init__(self):
        self.p = 0
        self.recording = True
        self.keys = self.values = self.xBC = self.x = self.dt = self.B = None
        self._state = None  # (position t, h_{t-1} [1, H, p, n]): the state before p, advanced as p rises

    def at(self, p: int) -> Prefix:
        """Serve suffixes starting at position p (0 ≤ p < T)."""
        self.p, self.recording = p, False
        return self

    # --- attention: transformers' Cache protocol ---------------------------------------------

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Keys and values [R, kv_heads, l, head] → those of positions 0..p+l-1, the recorded ones first."""
        if self.recording:
            self.keys, self.values = key_states.detach(), value_states.detach()
            return key_states, value_states
        R = key_states.shape[0]
        keys = self.keys[:, :, :self.p].expand(R, -1, -1, -1)
        values = self.values[:, :, :self.p].expand(R, -1, -1, -1)
        return torch.cat([keys, key_states], dim=2), torch.cat([values, value_states], dim=2)

    # --- Mamba-2 -----------------------------------------------------------------------------

    def conv(self, mixer: nn.Module, xBC: torch.Tensor) -> torch.Tensor:
        """The causal conv and its activation on xBC [R, l, conv_dim] at positions p.., the K − 1
        inputs before p read from the record (zeros before position 0, as the conv's padding)."""
        if self.recording:
            self.xBC = xBC.detach()
        K = mixer.conv1d.weight.shape[-1]
        before = self.xBC[:, max(0, self.p - K + 1):self.p].expand(xBC.shape[0], -1, -1)
        padded = nn.functional.pad(torch.cat([before, xBC], dim=1), (0, 0, K - 1 - before.shape[1], 0))
        weight, bias = mixer.conv1d.weight[:, 0], mixer.conv1d.bias  # [conv_dim, K], depthwise
        l = xBC.shape[1]
        # tap by tap into one tensor (torch's depthwise conv1d is slow on CPU for batches of rows)
        out = padded[:, :l] * weight[:, 0] if bias is None else torch.addcmul(bias, padded[:, :l], weight[:, 0])
        for k in range(1, K):
            out.addcmul_(padded[:, k:k + l], weight[:, k])
        return ACTIVATIONS[mixer.activation](out)

    def state(self, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor | None:
        """h_{p-1} [1, H, p, n] of the recorded run (None at p = 0: the zero state), by the recurrence
        h_t = Ā_t h_{t-1} + Δ_t x_t ⊗ B_t from the nearest state already computed."""
        if self.recording:
            self.x, self.dt, self.B = x.detach(), dt.detach(), B.detach()
            self._state = None
            return None
        if self.p == 0:
            return None
        t, h = self._state if self._state is not None and self._state[0] <= self.p else (0, None)
        if t < self.p:
            xs, dts, Bs = (v[:, t:self.p].float() for v in (self.x, self.dt, self.B))
            A_bar, write = discretise(dts, A), write_of(dts, xs, Bs)
            for s in range(self.p - t):
                h = write[:, s] if h is None else A_bar[:, s, :, None, None] * h + write[:, s]
            self._state = (self.p, h)
        return h

    @classmethod
    def record(cls, block: nn.Module, resid: torch.Tensor, kwargs: dict) -> tuple[torch.Tensor, Prefix]:
        """(the block's output [1, T, d], its Prefix) from one full run on resid [1, T, d]."""
        prefix = cls()
        out = block(resid, cache=prefix, **kwargs)
        return (out[0] if isinstance(out, tuple) else out), prefix


ACTIVATIONS = {"silu": nn.functional.silu, "swish": nn.functional.silu}


def in_projection(mixer: nn.Module, hidden_states: torch.Tensor):
    """(gate, xBC, dt) of transformers' Mamba-2 mixer: in_proj of hidden_states [b, l, d], with
    Falcon-H1's μP multipliers where the mixer has them."""
    multiplier = getattr(mixer, "ssm_in_multiplier", None)
    if multiplier is not None:
        hidden_states = hidden_states * multiplier
    projected = mixer.in_proj(hidden_states)
    if multiplier is not None:
        projected = projected * mixer.mup_vector
    return projected.split([mixer.intermediate_size, mixer.conv_dim, mixer.num_heads], dim=-1)


def mixer_suffix(self, hidden_states: torch.Tensor, prefix: Prefix) -> torch.Tensor:
    """transformers' Mamba-2 mixer (GraniteMoeHybridMambaLayer, FalconH1Mixer) on positions p..
    [R, l, d] → [R, l, d], the maths of `hybrid.ssd_forward` with the conv and the scan started
    from `prefix` (no hook points: nothing hooks a block run this way)."""
    dtype = hidden_states.dtype
    gate, xBC, dt = in_projection(self, hidden_states)
    xBC = prefix.conv(self, xBC)
    gn = self.n_groups * self.ssm_state_size
    x, B, C = torch.split(xBC, [self.intermediate_size, gn, gn], dim=-1)
    b, T, _ = x.shape
    x = x.view(b, T, self.num_heads, self.head_dim)
    B = B.view(b, T, self.n_groups, self.ssm_state_size)
    C = C.view(b, T, self.n_groups, self.ssm_state_size)
    delta = torch.clamp(nn.functional.softplus(dt + self.dt_bias.to(dt.dtype)), *self.time_step_limit)
    A = -torch.exp(self.A_log.float())
    h0 = prefix.state(x, delta, A, B)
    y = ssd_scan(x, delta, A, B, C, self.D, chunk=min(self.chunk_size, CHUNK))
    if h0 is not None:
        y = y + carried(h0, delta, A, C)
    y = y.reshape(b, T, self.intermediate_size)
    if isinstance(self.norm, nn.Identity):  # Falcon-H1 without mamba_rms_norm
        gated = y * nn.functional.silu(gate)
    else:
        gated = self.norm(y, gate)
    return self.out_proj(gated.to(dtype))


def carried(h0: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """What the state before the suffix adds to y [R, l, H, p]: (Π_{k ≤ t} Ā_k) · C_t · h0, with
    h0 [1, H, p, n] shared by every row (one GEMM per group, never a copy of h0 per row);
    Δ [R, l, H], C [R, l, g, n]. y of a scan started from h0 is that of the scan from zero plus this."""
    R, l, g, n = C.shape
    H, p = h0.shape[1:3]
    readout = torch.einsum("rlgn,gkn->rlgk", C.float(), h0.view(g, H // g * p, n))  # k: (head in group, channel)
    decay = torch.exp(torch.cumsum(dt.float() * A, dim=1))  # Π Ā from the suffix's start [R, l, H]
    return readout.reshape(R, l, H, p) * decay.unsqueeze(-1)
