"""A Mamba block on a suffix of positions: what a change at position p makes it recompute.

The model is causal, so an edit at position p (a patch) leaves every position before p unchanged
in every layer above it; those blocks need to compute positions p..T-1 only, given what the
unchanged prefix hands on: the last d_conv − 1 inputs of the causal conv, and the scan's state.
Instead of the state, the prefix's x, Δ, B and C (`Prefix`, from the run being edited) are kept
and the scan (`scan.selective_scan`, the C kernel on CPU) runs over the whole prompt: it costs
T × d_in × n multiply-adds per row, against the projections' T × d × d_in, which run on the
suffix only (in_proj, x_proj, dt_proj, out_proj: the bulk of a block).

`block_suffix` is `MambaBlock.forward` restricted to positions p.. (same functions, same order:
RMSNorm, in_proj, `conv_silu`, x_proj, `softplus`(dt_proj), the scan, the gate, out_proj), so
its outputs equal the full block's at those positions to fp32 rounding. Hook points are not
called: nothing hooks the blocks above a patch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .mamba import MambaBlock, conv_silu, softplus
from .scan import selective_scan

PREFIX_POINTS = ("norm", "x", "delta", "B", "C")
"""The hook points a `Prefix` is read from, in one forward of the run being edited."""


@dataclass(frozen=True)
class Prefix:
    """What block k's positions before p hand on, for any p: the run's values at every position.

    x_in: in_proj's x half before the conv [1, T, d_in]; x, delta [1, T, d_in]; B, C [1, T, n].
    """
    x_in: torch.Tensor
    x: torch.Tensor
    delta: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor

    @classmethod
    def of(cls, block: MambaBlock, seen: dict[str, torch.Tensor]) -> "Prefix":
        """From the block's `PREFIX_POINTS` values of one forward (x_in is recomputed from norm)."""
        mixer = block.mixer
        d_in = mixer.D.shape[0]
        w, b = mixer.in_proj.weight[:d_in], None if mixer.in_proj.bias is None else mixer.in_proj.bias[:d_in]
        return cls(F.linear(seen["norm"], w, b), seen["x"], seen["delta"], seen["B"], seen["C"])


def block_suffix(block: MambaBlock, resid: torch.Tensor, prefix: Prefix, p: int, last_only: bool = False) -> torch.Tensor:
    """The block's output at positions p.. [b, T − p, d] (last_only: [b, 1, d]) from its input
    there, resid [b, T − p, d], and the unchanged positions before p (`prefix`)."""
    mixer, b = block.mixer, resid.shape[0]
    x_in, z = mixer.in_proj(block.norm(resid)).chunk(2, dim=-1)
    k = mixer.conv1d.weight.shape[-1]
    history = prefix.x_in[:, max(0, p - (k - 1)):p].expand(b, -1, -1)
    x = conv_silu(torch.cat([history, x_in], dim=1), mixer.conv1d.weight, mixer.conv1d.bias)[:, history.shape[1]:]
    dt, B, C = mixer.x_proj(x).split([mixer.dt_rank, mixer.d_state, mixer.d_state], dim=-1)
    delta = softplus(mixer.dt_proj(dt))

    def whole(before, after):  # the prefix's values, then the suffix's: [b, T, ...]
        return torch.cat([before[:, :p].expand(b, -1, -1), after], dim=1).float()

    A = -torch.exp(mixer.A_log.float())
    y = selective_scan(whole(prefix.x, x), whole(prefix.delta, delta), A, whole(prefix.B, B), whole(prefix.C, C),
                       mixer.D.float())[:, p:].to(x.dtype)
    if last_only:
        resid, y, z = resid[:, -1:], y[:, -1:], z[:, -1:]
    return resid + mixer.out_proj(y * F.silu(z))
