"""Mamba-2's scan, the structured state space duality (SSD; Dao & Gu 2024, §6 and Listing 1).

Per head the state space model has one scalar decay, so the recurrence
    h_t = Ā_t h_{t-1} + Δ_t · x_t ⊗ B_t,      Ā_t = exp(Δ_t A),      y_t = h_t · C_t + D x_t
unrolls into a masked attention-like matrix, y = (L ∘ C Bᵀ) · (Δ x) + D x, with
L[t, s] = Π_{k=s+1..t} Ā_k for s ≤ t (0 above the diagonal). The chunked form computes it with
GEMMs: within a chunk of Q positions the quadratic form (C Bᵀ ⊙ L) · Δx; across chunks the
recurrence over the chunks' end states only, read out at every position with its decay.

Shapes (the letters of `compare.ssm.mamba2`'s glossary):
    x        [b, l, heads, p]        the SSM input per head (p = headdim)
    dt       [b, l, heads]           Δ, after softplus, dt_bias and the clamp
    A        [heads]                 negative; one scalar per head (Mamba-1's is [d_in, n])
    B, C     [b, l, g, n]            per group; the heads/g heads of a group share them
    D        [heads]                 the skip
    A_bar    [b, l, heads]           Ā = exp(Δ·A)
    write    [b, l, heads, p, n]     Δ·x ⊗ B, what enters the state
    h        [b, l, heads, p, n]     the state after every position
    y        [b, l, heads, p]

`ssd_scan` is the fast path (chunked, fp32, never more than a chunk's [Q, Q] matrices per head
and one state per chunk); with ``return_states`` it materialises h and computes y from that h
(`states` then `read_out`), which is the path an edit of h takes. `ssd_scan_ref` is the same
signature, position by position: the ground truth of the tests (fp64 when x is fp64).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .scan import linear_scan

CHUNK = 64  # Q: positions per chunk; the quadratic part costs Q per position, the recurrence 1/Q


def discretise(dt: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Ā = exp(Δ·A) [b, l, heads] (zero-order hold; B is taken as Δ·B, Euler, as mamba_ssm)."""
    return torch.exp(dt * A)


def write_of(dt: torch.Tensor, x: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """w = Δ·x ⊗ B [b, l, heads, p, n], B broadcast from its group to the group's heads."""
    return (dt.unsqueeze(-1) * x).unsqueeze(-1) * per_head(B, x.shape[2]).unsqueeze(-2)


def per_head(B: torch.Tensor, heads: int) -> torch.Tensor:
    """[b, l, g, n] → [b, l, heads, n]: head i reads group i // (heads / g), as mamba_ssm."""
    return B.repeat_interleave(heads // B.shape[2], dim=2)


def states(A_bar: torch.Tensor, write: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """Every state h_t = Ā_t h_{t-1} + w_t [b, l, heads, p, n] (h_{-1} = h0 [b, heads, p, n], default 0)."""
    return linear_scan(A_bar[..., None, None], write, h0)


def read_out(h: torch.Tensor, C: torch.Tensor, D: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """y_t = h_t · C_t + D x_t [b, l, heads, p]."""
    y = (h @ per_head(C, h.shape[2]).unsqueeze(-1)).squeeze(-1)
    return y if D is None else y + D[:, None] * x


def ssd_scan(x, dt, A, B, C, D=None, *, chunk: int = CHUNK, h0: torch.Tensor | None = None,
             return_states: bool = False):
    """y [b, l, heads, p] of the SSM (module docstring) in fp32; with return_states, (y, h) with h
    the states [b, l, heads, p, n] and y read out of them. h0: the state before position 0."""
    x, dt, A, B, C = (t.float() for t in (x, dt, A, B, C))
    D = None if D is None else D.float()
    if return_states:
        h = states(discretise(dt, A), write_of(dt, x, B), h0)
        return read_out(h, C, D, x), h
    return ssd_chunked(x, dt, A, B, C, D, chunk=chunk, h0=h0)


def ssd_chunked(x, dt, A, B, C, D=None, *, chunk: int = CHUNK, h0=None) -> torch.Tensor:
    """y by the chunked SSD form: GEMMs within chunks of `chunk` positions, a recurrence across them.

    With a = Δ·A (log Ā ≤ 0) and its running sums within a chunk, L[t, s] = exp(Σ_{k=s+1..t} a_k)
    is built from segment sums (`segsum`), never as a difference of two long running sums, so a
    chunk's length does not change the rounding beyond fp32's; the chunk's end state
    S = Σ_s exp(Σ_{k>s} a_k) Δ_s x_s ⊗ B_s is carried by H_c = exp(Σ_chunk a) H_{c-1} + S_c, and
    position t of chunk c reads exp(Σ_{k≤t} a_k) C_t · H_{c-1}.
    """
    b, l, heads, p = x.shape
    g, n = B.shape[2:]
    q = max(1, min(chunk, l))
    nc = -(-l // q)
    pad = nc * q - l
    # [b, nc, q, ...]; padded positions have Δ = 0 (Ā = 1, no write) and are cut off at the end
    xdt = F.pad(x * dt.unsqueeze(-1), (0, 0, 0, 0, 0, pad)).view(b, nc, q, g, heads // g, p)
    a = F.pad(dt * A, (0, 0, 0, pad)).view(b, nc, q, g, heads // g)
    Bc = F.pad(B, (0, 0, 0, 0, 0, pad)).view(b, nc, q, g, n)
    Cc = F.pad(C, (0, 0, 0, 0, 0, pad)).view(b, nc, q, g, n)
    a = a.permute(0, 1, 3, 4, 2)  # [b, nc, g, r, q] (r = heads per group)
    L = torch.exp(segsum(a))  # [b, nc, g, r, q, q]
    CB = Cc.transpose(2, 3) @ Bc.permute(0, 1, 3, 4, 2)  # [b, nc, g, q, q], shared by a group's heads
    xdt = xdt.permute(0, 1, 3, 4, 2, 5)  # [b, nc, g, r, q, p]
    y = (L * CB.unsqueeze(3)) @ xdt  # within the chunk: [b, nc, g, r, q, p]
    if nc > 1 or h0 is not None:  # else no position reads a state from before its chunk
        y = y + _across_chunks(xdt, a, Bc, Cc, h0)
    y = y.permute(0, 1, 4, 2, 3, 5).reshape(b, nc * q, heads, p)[:, :l]
    return y if D is None else y + D[:, None] * x


def _across_chunks(xdt, a, Bc, Cc, h0) -> torch.Tensor:
    """exp(cum_t) · C_t · H_{c-1} [b, nc, g, r, q, p]: what each position reads of the state
    before its chunk (`ssd_chunked`'s layout; the last chunk's end state is read by none)."""
    b, nc, g, r, q, p = xdt.shape
    cum = a.cumsum(-1)
    to_end = torch.exp(cum[..., -1:] - cum)  # decay from each position to the chunk's end (≤ 1)
    # S_c[p, n] = Σ_s to_end_s · Δ_s x_s[p] · B_s[n]: [b, nc - 1, g, r, p, n]
    S = (xdt[:, :-1] * to_end[:, :-1].unsqueeze(-1)).transpose(-1, -2) @ Bc[:, :-1].transpose(2, 3).unsqueeze(3)
    chunk_decay = torch.exp(cum[..., -1])  # [b, nc, g, r]
    n = Bc.shape[-1]
    H = xdt.new_zeros(b, g, r, p, n) if h0 is None else h0.float().reshape(b, g, r, p, n)
    entry = xdt.new_empty(b, nc, g, r, p, n)  # the state before each chunk
    for c in range(nc):
        entry[:, c] = H
        if c < nc - 1:
            H = chunk_decay[:, c, ..., None, None] * H + S[:, c]
    return torch.exp(cum).unsqueeze(-1) * (Cc.transpose(2, 3).unsqueeze(3) @ entry.transpose(-1, -2))


def segsum(a: torch.Tensor) -> torch.Tensor:
    """[..., q] → [..., q, q]: out[t, s] = Σ_{k=s+1..t} a_k for s ≤ t, -inf above the diagonal.

    Each entry is summed from its own terms (a cumulative sum over a masked copy), the stable
    form of ssd_minimal's `segsum`: exp of it is the decay from s to t.
    """
    q = a.shape[-1]
    strict = torch.ones(q, q, dtype=torch.bool, device=a.device).tril(-1)
    out = a.unsqueeze(-1).expand(*a.shape, q).masked_fill(~strict, 0).cumsum(-2)
    return out.masked_fill(~strict.logical_or(torch.eye(q, dtype=torch.bool, device=a.device)), -torch.inf)


def ssd_scan_ref(x, dt, A, B, C, D=None, *, chunk: int = CHUNK, h0: torch.Tensor | None = None,
                 return_states: bool = False):
    """`ssd_scan` position by position (chunk is ignored): in fp32, or fp64 when x is fp64."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x, dt, A, B, C = (t.to(dtype) for t in (x, dt, A, B, C))
    heads = x.shape[2]
    B, C = per_head(B, heads), per_head(C, heads)
    b, _, _, p = x.shape
    h = torch.zeros(b, heads, p, B.shape[-1], dtype=dtype) if h0 is None else h0.to(dtype)
    ys, hs = [], []
    for t in range(x.shape[1]):
        A_bar = torch.exp(dt[:, t] * A)  # [b, heads]
        h = A_bar[..., None, None] * h + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]
        hs.append(h)
        y = (h * C[:, t, :, None, :]).sum(-1)
        ys.append(y if D is None else y + D.to(dtype)[:, None] * x[:, t])
    y = torch.stack(ys, 1)
    return (y, torch.stack(hs, 1)) if return_states else y


def ssd_attention(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Mamba-2's hidden attention α [b, heads, l, l]: α[t, s] = C_t · B_s · Π_{k=s+1..t} Ā_k · Δ_s
    (0 for s > t), so that y_t = Σ_s α[t, s] x_s + D x_t, per head (the whole of the matrix
    the chunked form cuts into blocks)."""
    heads = dt.shape[2]
    Bh, Ch = per_head(B.float(), heads), per_head(C.float(), heads)
    a = (dt.float() * A.float()).transpose(1, 2)  # [b, heads, l]
    CB = Ch.transpose(1, 2) @ Bh.permute(0, 2, 3, 1)  # [b, heads, l, l]
    return CB * torch.exp(segsum(a)) * dt.float().transpose(1, 2).unsqueeze(-2)


def attention_terms(A: torch.Tensor, D: torch.Tensor, seen: dict, units) -> tuple:
    """(α [units, l, l], x [l, units, p], D [units], y [l, units, p]) of one Mamba-2 layer's heads
    `units`, from the points read on its first prompt (`seen`: dt, B, C, x, y): what hidden
    attention needs to rebuild y_t = Σ_s α[t, s] x_s + D x_t (`ssd_attention`)."""
    dt, B, C = (seen[name][:1].float() for name in ("dt", "B", "C"))
    alpha = ssd_attention(dt, A.to(dt.device), B, C)[0, units]
    return alpha, seen["x"][0][:, units].float(), D[units], seen["y"][0][:, units].float()
