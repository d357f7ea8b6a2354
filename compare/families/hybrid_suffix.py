"""Hybrid blocks run on positions p.. only, from what one full run of them left at positions < p.

A causal block's output at positions ≥ p depends on its input at positions < p only through what
its mixers carry forward: attention reads their keys and values, a Mamba-2 mixer its state h_{p-1}
and the causal conv the K − 1 inputs before p. `Prefix` holds these from one full run of the block
(`Prefix.record`). `Suffixes` packs rows of several starts p into one call of transformers' block,
along positions, [1, N, d]: the block's position-wise parts (its norms, projections and MLP) run
on every row at once, as one GEMM each, and its mixers piece by piece, each piece (the rows of one
start) reading the prefix before its p. The packing is handed to the block as
    cache       attention asks it for keys and values (`update`, transformers' Cache protocol) and
                gets the packed rows' own; the Mamba-2 mixer (`hybrid.hook_mixer`) runs
                `mixer_suffix` with it: the conv reads the recorded inputs before p, the scan
                starts from the recorded state h_{p-1};
    attention's mask   the hooked attention (`hybrid.hooked_attention`) runs `Suffixes.attend`:
                each piece's queries against the recorded keys before p and its own rows' keys.
So a block on the packed rows equals block(resid)[:, p:] of each row to fp32 rounding, for every
row whose positions < p are the recorded run's (`analyses.patching`'s suffix wavefront).

Letters as in `hybrid`'s glossary (H SSM heads of p channels, g groups of B and C of n, the
conv's K taps over conv_dim = d_in + 2·g·n channels); R rows, l = T − p positions, N packed
positions (Σ R·l over the pieces).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..ssm.mamba import causal_conv, softplus
from ..ssm.ssd import CHUNK, discretise, ssd_scan, write_of


class Prefix:
    """What the positions of one recorded run of a block leave to its mixers (module docstring).

    keys, values   attention's, after rotary and any key multiplier   [1, kv_heads, T, head]
    xBC            the Mamba-2 conv's input                           [1, T, conv_dim]
    x, dt, B       the scan's inputs, for the state before p          [1, T, H, p], [1, T, H], [1, T, g, n]
    """

    def __init__(self, T: int):
        self.T = T
        self.recording = True
        self.keys = self.values = self.xBC = self.x = self.dt = self.B = None
        self._state = None  # (position t, h_{t-1} [1, H, p, n]): the state before p, advanced as p rises

    def conv(self, mixer: nn.Module, xBC: torch.Tensor, p: int) -> torch.Tensor:
        """The causal conv and its activation on xBC [R, l, conv_dim] at positions p.., the K − 1
        inputs before p read from the record (zeros before position 0, as the conv's padding)."""
        if self.recording:
            self.xBC = xBC.detach()
        K = mixer.conv1d.weight.shape[-1]
        before = self.xBC[:, max(0, p - K + 1):p].expand(xBC.shape[0], -1, -1)
        # tap by tap (`causal_conv`: torch's depthwise conv1d is slow on CPU for batches of rows)
        out = causal_conv(torch.cat([before, xBC], dim=1), mixer.conv1d.weight, mixer.conv1d.bias)
        return ACTIVATIONS[mixer.activation](out[:, before.shape[1]:])

    def state(self, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, p: int) -> torch.Tensor | None:
        """h_{p-1} [1, H, p, n] of the recorded run (None at p = 0: the zero state), by the recurrence
        h_t = Ā_t h_{t-1} + Δ_t x_t ⊗ B_t from the nearest state already computed."""
        if self.recording:
            self.x, self.dt, self.B = x.detach(), dt.detach(), B.detach()
            return None
        if p == 0:
            return None
        t, h = self._state if self._state is not None and self._state[0] <= p else (0, None)
        if t < p:
            xs, dts, Bs = (v[:, t:p].float() for v in (self.x, self.dt, self.B))
            A_bar, write = discretise(dts, A), write_of(dts, xs, Bs)
            for s in range(p - t):
                h = write[:, s] if h is None else A_bar[:, s, :, None, None] * h + write[:, s]
            self._state = (p, h)
        return h

    @classmethod
    def record(cls, block: nn.Module, resid: torch.Tensor, kwargs: dict) -> tuple[torch.Tensor, Prefix]:
        """(the block's output [1, T, d], its Prefix) from one full run on resid [1, T, d]."""
        prefix = cls(resid.shape[1])
        out = block(resid, cache=Suffixes(prefix, [(0, 1)]), **kwargs)
        prefix.recording = False
        return (out[0] if isinstance(out, tuple) else out), prefix


class Suffixes:
    """Rows of several starts packed along positions (module docstring): piece s is R_s rows of
    positions p_s..T−1, one row after the other, N = Σ R_s (T − p_s) positions in all.
    starts: (p_s, R_s) per piece."""

    def __init__(self, prefix: Prefix, starts: Sequence[tuple[int, int]]):
        self.prefix, self.starts = prefix, tuple(starts)
        self.sizes = [R * (prefix.T - p) for p, R in self.starts]

    def pack(self, pieces: Sequence[torch.Tensor]) -> torch.Tensor:
        """Pieces [R_s, l_s, ...] → [1, N, ...]."""
        return torch.cat([piece.flatten(0, 1) for piece in pieces])[None]

    def unpack(self, packed: torch.Tensor) -> list[torch.Tensor]:
        """[1, N, ...] → the pieces [R_s, l_s, ...] (views)."""
        return [x.unflatten(0, (R, self.prefix.T - p)) for (p, R), x in zip(self.starts, packed[0].split(self.sizes))]

    def positions(self, device) -> torch.Tensor:
        """Each packed position's place in the prompt [1, N], for rotary embeddings."""
        return torch.cat([torch.arange(p, self.prefix.T, device=device).repeat(R) for p, R in self.starts])[None]

    # --- attention: transformers' Cache protocol, then the mask -------------------------------

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """The keys and values as they are (`attend` reads the prefix's); recorded in a recording run."""
        if self.prefix.recording:
            self.prefix.keys, self.prefix.values = key_states.detach(), value_states.detach()
        return key_states, value_states

    def attend(self, module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float,
               dropout: float = 0.0):
        """transformers' SDPA attention of each piece: its queries [R, heads, l, head] against the
        prefix's keys and values before p and its own rows' (packed: [1, ·, N, head]).
        Returns (output [1, N, heads, head], None) as the attention functions do."""
        from transformers import AttentionInterface

        sdpa, T, outs = AttentionInterface()["sdpa"], self.prefix.T, []
        for (p, R), q, k, v in zip(self.starts, *(self._pieces(t) for t in (query, key, value))):
            if p:
                k = torch.cat([self.prefix.keys[:, :, :p].expand(R, -1, -1, -1), k], dim=2)
                v = torch.cat([self.prefix.values[:, :, :p].expand(R, -1, -1, -1), v], dim=2)
            mask = causal_mask(T - p, p, q.dtype, q.device)
            outs.append(sdpa(module, q, k, v, mask, dropout=dropout, scaling=scaling)[0])  # [R, l, heads, head]
        return self.pack(outs), None

    def _pieces(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[1, heads, N, head] → per piece [R, heads, l, head]."""
        return [t.unflatten(1, (R, self.prefix.T - p)).transpose(0, 1)
                for (p, R), t in zip(self.starts, x[0].split(self.sizes, dim=1))]


def causal_mask(l: int, start: int, dtype: torch.dtype, device) -> torch.Tensor | None:
    """The additive mask of positions start..start+l-1 over keys 0..start+l-1 [1, 1, l, start + l],
    query i seeing keys 0..start+i; None at start 0 (SDPA's own causal mask)."""
    if not start:
        return None
    return torch.full((1, 1, l, start + l), torch.finfo(dtype).min, device=device, dtype=dtype).triu(start + 1)


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


def scan_inputs(mixer: nn.Module, xBC: torch.Tensor, dt: torch.Tensor):
    """(x [b, l, H, p], B, C [b, l, g, n], Δ [b, l, H]) from the conv's output xBC [b, l, ·] and dt:
    the split into heads and groups, and mamba2_chunk_scan's own first steps, Δ = softplus(dt +
    dt_bias) clamped to time_step_limit (so that Δ is a point: the scan then adds neither)."""
    gn = mixer.n_groups * mixer.ssm_state_size
    x, B, C = torch.split(xBC, [mixer.intermediate_size, gn, gn], dim=-1)
    b, l, _ = x.shape
    delta = softplus(dt + mixer.dt_bias.to(dt.dtype))
    if tuple(mixer.time_step_limit) != (0.0, float("inf")):  # else the clamp is the identity on softplus
        delta = torch.clamp(delta, *mixer.time_step_limit)
    return (x.view(b, l, mixer.num_heads, mixer.head_dim), B.view(b, l, mixer.n_groups, mixer.ssm_state_size),
            C.view(b, l, mixer.n_groups, mixer.ssm_state_size), delta)


def gated_norm(mixer: nn.Module, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """The scan's output y [b, l, d_in] gated by the in_proj's gate: the mixer's gated RMSNorm, or
    y · SiLU(gate) where it has none (Falcon-H1 without mamba_rms_norm)."""
    if isinstance(mixer.norm, nn.Identity):
        return y * nn.functional.silu(gate)
    return mixer.norm(y, gate)


def mixer_output(mixer: nn.Module, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """The mixer's output [b, l, d] from the scan's y [b, l, d_in] and the gate [b, l, d_in] (either
    may broadcast over b): the gated norm, then out_proj in its weight's dtype."""
    return mixer.out_proj(gated_norm(mixer, y, gate).to(mixer.out_proj.weight.dtype))


def mixer_suffix(self, hidden_states: torch.Tensor, suffixes: Suffixes) -> torch.Tensor:
    """transformers' Mamba-2 mixer (GraniteMoeHybridMambaLayer, FalconH1Mixer) on packed rows
    [1, N, d] → [1, N, d], the maths of `hybrid.ssd_forward`: in_proj, the gated norm and
    out_proj on every position at once, the conv and the scan per piece, started from the
    prefix (no hook points: nothing hooks a block run this way)."""
    prefix = suffixes.prefix
    gate, xBC, dt = in_projection(self, hidden_states)
    A = -torch.exp(self.A_log.float())
    ys = []
    for (p, R), xBC, dt in zip(suffixes.starts, suffixes.unpack(xBC), suffixes.unpack(dt)):
        x, B, C, delta = scan_inputs(self, prefix.conv(self, xBC, p), dt)
        h0 = prefix.state(x, delta, A, B, p)
        y = ssd_scan(x, delta, A, B, C, self.D, chunk=min(self.chunk_size, CHUNK))
        ys.append(y if h0 is None else y + carried(h0, delta, A, C))
    return mixer_output(self, suffixes.pack(ys).reshape(*hidden_states.shape[:2], self.intermediate_size), gate)


def carried(h0: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """What the state before the suffix adds to y [R, l, H, p]: (Π_{k ≤ t} Ā_k) · C_t · h0, with
    h0 [1, H, p, n] shared by every row (one GEMM per group, never a copy of h0 per row);
    Δ [R, l, H], C [R, l, g, n]. y of a scan started from h0 is that of the scan from zero plus this."""
    R, l, g, n = C.shape
    H, p = h0.shape[1:3]
    readout = torch.einsum("rlgn,gkn->rlgk", C.float(), h0.view(g, H // g * p, n))  # k: (head in group, channel)
    decay = torch.exp(torch.cumsum(dt.float() * A, dim=1))  # Π Ā from the suffix's start [R, l, H]
    return readout.reshape(R, l, H, p) * decay.unsqueeze(-1)
