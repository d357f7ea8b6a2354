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

import functools

import torch
import torch.nn.functional as F

from .scan import linear_scan

CHUNK = 64  # Q: positions per chunk; the quadratic part costs Q per position, the recurrence 1/Q
# Decays exp(s) with s below FLOOR (< 1e-26) are raised to exp(FLOOR) in the chunked form: far under
# fp32's rounding of any sum they enter, and it keeps subnormal numbers (exp(s) for s in
# (-104, -87), and products of small decays) out of the products and GEMMs, where x86 CPUs run
# them up to 100× slower (the chunked scan took twice as long at Granite-4.0-H-350M's shape)
FLOOR = -60.0
# Noised positions up to which `increment_into_y` pairs each with every position by GEMMs (P·T·heads·p
# products, no state); beyond, it scans the increments as states (T·heads·p·n, memory-bound).
PAIRED_POSITIONS = 32


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
    position t of chunk c reads exp(Σ_{k≤t} a_k) C_t · H_{c-1}. Everything is laid out
    [b, g, r, nc, q, ·] (r = heads per group): each head's chunks are one batch of GEMMs, and the
    layout changes once on the way in (Δx) and once on the way out (added to D x).
    """
    b, l, heads, p = x.shape
    g, n = B.shape[2:]
    r = heads // g
    q = max(1, min(chunk, l))
    nc = -(-l // q)
    pad = nc * q - l
    if pad:  # padded positions have Δ = 0 (Ā = 1, no write) and are cut off at the end
        x, dt, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
    xdt = _mul_into(x.new_empty(b, g, r, nc, q, p), x.reshape(b, nc, q, g, r, p).permute(0, 3, 4, 1, 2, 5),
                    dt.reshape(b, nc, q, g, r, 1).permute(0, 3, 4, 1, 2, 5))
    a = (dt * A).reshape(b, nc, q, g, r).permute(0, 3, 4, 1, 2)  # [b, g, r, nc, q]
    Bc, Cc = (t.reshape(b, nc, q, g, n).permute(0, 3, 1, 2, 4) for t in (B, C))  # [b, g, nc, q, n]
    CB = (Cc @ Bc.transpose(-1, -2)).unsqueeze(2)  # [b, g, 1, nc, q, q]: shared by a group's heads
    y = (torch.exp(segsum(a, floor=FLOOR)) * CB) @ xdt  # within the chunk: [b, g, r, nc, q, p]
    if nc > 1 or h0 is not None:  # else no position reads a state from before its chunk
        _add_across_chunks(y, xdt, a, Bc, Cc, h0)
    y = y.permute(0, 3, 4, 1, 2, 5)  # [b, nc, q, g, r, p], a view
    out = x.new_empty(b, nc * q, heads, p)
    if D is None:
        out.view(b, nc, q, g, r, p).copy_(y)
    else:
        out = _mul_into(out, D[:, None], x)
        out.view(b, nc, q, g, r, p).add_(y)
    return out[:, :l]


def _mul_into(out: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """u · v in out's (contiguous) layout in one pass; under autograd, where out= is not allowed, two."""
    if torch.is_grad_enabled() and (u.requires_grad or v.requires_grad):
        return out.copy_(u * v)
    return torch.mul(u, v, out=out)


def _add_across_chunks(y, xdt, a, Bc, Cc, h0) -> None:
    """Add to y [b, g, r, nc, q, p] what each position reads of the state before its chunk,
    exp(cum_t) · C_t · H_{c-1} (`ssd_chunked`'s layout). The states entering chunks 1.. are one
    GEMM per head over the chunks' end states S (the last chunk's is read by none). B and C are
    shared by a group's r heads: their products with the states put those heads side by side
    (r·p rows) rather than copying B and C to every head."""
    b, g, r, nc, q, p = xdt.shape
    n = Bc.shape[-1]
    cum = a.cumsum(-1)  # [b, g, r, nc, q]
    total = cum[..., -1]  # each chunk's log-decay, [b, g, r, nc]
    to_end = decay(total[..., :-1, None] - cum[..., :-1, :])  # from each position to its chunk's end (≤ 1)
    # S_c[p, n] = Σ_s to_end_s · Δ_s x_s[p] · B_s[n], per head: [b, g, nc - 1, r·p, n]
    X = (xdt[:, :, :, :-1] * to_end.unsqueeze(-1)).permute(0, 1, 3, 2, 5, 4).reshape(b, g, nc - 1, r * p, q)
    S = (X @ Bc[:, :, :-1]).view(b, g, nc - 1, r, p * n).transpose(2, 3)  # [b, g, r, nc - 1, p·n]
    # entry_{c+1} = Σ_{j ≤ c} exp(Σ_{k=j+1..c} total_k) S_j (+ exp(Σ_{k≤c} total_k) h0)
    entry = decay(segsum(total[..., :-1])) @ S  # [b, g, r, nc - 1, p·n]
    first = 1
    if h0 is not None:
        h0 = h0.to(xdt.dtype).reshape(b, g, r, 1, p * n)
        entry = torch.cat([h0, entry + decay(total[..., :-1].cumsum(-1)).unsqueeze(-1) * h0], dim=3)
        first = 0
    chunks = nc - first
    entry = entry.view(b, g, r, chunks, p, n).permute(0, 1, 3, 5, 2, 4).reshape(b, g, chunks, n, r * p)
    reads = (Cc[:, :, first:] @ entry).view(b, g, chunks, q, r, p).permute(0, 1, 4, 2, 3, 5)  # [b, g, r, ·, q, p]
    y[:, :, :, first:] += decay(cum[..., first:, :]).unsqueeze(-1) * reads


def decay(s: torch.Tensor) -> torch.Tensor:
    """exp(s) for log-decays s ≤ 0, those below FLOOR raised to it (see FLOOR)."""
    return torch.exp(s.clamp(min=FLOOR))


def segsum(a: torch.Tensor, floor: float | None = None) -> torch.Tensor:
    """[..., q] → [..., q, q]: out[t, s] = Σ_{k=s+1..t} a_k for s ≤ t, -inf above the diagonal
    (with `floor`, sums below it are raised to it).

    Each entry is summed from its own terms (a cumulative sum over a masked copy), the stable
    form of ssd_minimal's `segsum`: exp of it is the decay from s to t.
    """
    q = a.shape[-1]
    strict, lower = _masks(q, a.device)
    out = a.unsqueeze(-1).expand(*a.shape, q).masked_fill(~strict, 0).cumsum(-2)
    if floor is not None:
        out.clamp_(min=floor)
    return out.masked_fill_(~lower, -torch.inf)


@functools.lru_cache(maxsize=16)
def _masks(q: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(strictly lower, lower) triangular boolean [q, q] (constants: built once per size and device)."""
    lower = torch.ones(q, q, dtype=torch.bool, device=device).tril()
    return lower.tril(-1), lower


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


def increment_into_y(component: str, A: torch.Tensor, dt: torch.Tensor, x: torch.Tensor, C: torch.Tensor,
                     positions, values: torch.Tensor) -> torch.Tensor:
    """Δy [R, T, heads, p] for values [R, P, heads, p, n] added to h, write or h_readout, or
    [R, P, g, n] added to B, at `positions` (P ints), with the clean Δ [1, T, heads], x [1, T,
    heads, p], C [1, T, g, n] and A [heads]: the restart from y of Mamba-2's points and the
    hybrids' (`Point.into_y`), no state materialised.

    y_t = C_t · h_t + D x_t is linear in h. An increment ε_s of h (`mamba2.materialised_ssd`:
    it enters the recurrence) or of the write w_s (h_s = Ā_s h_{s-1} + w_s: the same increment)
    reaches every later state decayed by L[t, s] = Π_{k=s+1..t} Ā_k, so
    Δy_t = Σ_s L[t, s] C_t · ε_s; one of h_readout changes y at s only, by C_s · ε_s.
    B_s is read by the write alone (w_s = Δ_s x_s ⊗ B_s), so ε_s on B_s is the write
    increment Δ_s x_s ⊗ ε_s: Δy_t = Σ_s L[t, s] Δ_s x_s (C_t · ε_s), the SSD with ε for B
    (`ssd_chunked`, no D·x: the chunked GEMMs of a forward whatever the number of positions).
    """
    pos = torch.tensor(list(positions))
    values, dt, C = values.float(), dt.float(), C.float()
    A = A.to(dt.device)
    R = len(values)
    if component == "B":
        noise = values.new_zeros(R, *C.shape[1:])
        noise[:, pos] = values
        return ssd_chunked(x.float().expand(R, -1, -1, -1), dt.expand(R, -1, -1), A, noise, C.expand(R, -1, -1, -1))
    heads = values.shape[2]
    if component == "h_readout":
        Ch = per_head(C, heads)[0]  # [T, heads, n]
        dy = values.new_zeros(R, C.shape[1], *values.shape[2:4])
        dy[:, pos] = (values @ Ch[pos].unsqueeze(-1)).squeeze(-1)
        return dy
    if len(pos) > PAIRED_POSITIONS:
        increment = values.new_zeros(R, C.shape[1], *values.shape[2:])
        increment[:, pos] = values
        return read_out(states(discretise(dt, A), increment), C, None, None)
    L = torch.exp(segsum((dt[0] * A).T))[:, :, pos]  # [heads, T, P]: the decay from each noised position
    # ε_s · C_t for every pair as one GEMM per group over n (the noise read once), then the decay
    _, P, _, p, n = values.shape
    Cg = C[0]  # [T, g, n]
    read = torch.einsum("rsgkn,tgn->rsgkt", values.reshape(R, P, Cg.shape[1], -1, n), Cg)
    return torch.einsum("hts,rshpt->rthp", L, read.reshape(R, P, heads, p, -1))
