"""The selective scan: h_t = Ā_t ⊙ h_{t-1} + w_t,  y_t = h_t · C_t + D ⊙ x_t.

Shapes (time-major, so one step's slice is contiguous in memory):
    x, delta : [b, l, d_in]      input to the SSM and its step size Δ (after softplus)
    A        : [d_in, n]          continuous state matrix (negative, diagonal per channel)
    B, C     : [b, l, n]          input-dependent write/read vectors
    D        : [d_in]             skip connection
    A_bar, w : [b, l, d_in, n]    Ā = exp(Δ·A) and the write w = B̄·x = Δ·B·x
    h        : [b, l, d_in, n]    the state after every position
    y        : [b, l, d_in]

Each fast function has a `_ref` twin with the same signature: the obvious fp32 loop of
Algorithm 2 in the Mamba paper, which the tests treat as ground truth.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import native

LOG2_E = math.log2(math.e)
CHUNK_BYTES = 4 * 2**20  # per buffer: 42 steps at d_in=1536, n=16, batch 1; small enough to reuse heap pages


def discretise(delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor):
    """Zero-order hold for A, Euler for B (as mamba_ssm): Ā = exp(ΔA), B̄ = ΔB.

    exp(ΔA) is evaluated as 2^(Δ·(A·log₂e)), the form mamba_ssm's CUDA kernel uses: on CPU too
    exp2 runs ~2.6× faster than exp, and Ā is the scan's largest elementwise cost.
    """
    return torch.exp2(delta.unsqueeze(-1) * (A * LOG2_E)), delta.unsqueeze(-1) * B.unsqueeze(-2)


def write_of(B_bar: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """w = B̄·x, what enters the state at each position."""
    return B_bar * x.unsqueeze(-1)


def linear_scan(A_bar: torch.Tensor, write: torch.Tensor) -> torch.Tensor:
    """All states h of h_t = Ā_t h_{t-1} + w_t with h_{-1} = 0, as one new tensor."""
    if torch.is_grad_enabled() and (A_bar.requires_grad or write.requires_grad):
        return linear_scan_ref(A_bar, write)  # in-place steps would overwrite what backward needs
    h = write.clone()
    for t in range(1, h.shape[1]):
        h[:, t].addcmul_(A_bar[:, t], h[:, t - 1])
    return h


def linear_scan_ref(A_bar: torch.Tensor, write: torch.Tensor) -> torch.Tensor:
    h = torch.zeros_like(write[:, 0])
    states = []
    for t in range(write.shape[1]):
        h = A_bar[:, t] * h + write[:, t]
        states.append(h)
    return torch.stack(states, dim=1)


def read_out(h: torch.Tensor, C: torch.Tensor, D: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """y_t = h_t · C_t + D ⊙ x_t, a batched mat-vec over the state dimension."""
    return (h @ C.unsqueeze(-1)).squeeze(-1) + D * x


def selective_scan(x, delta, A, B, C, D, z=None) -> torch.Tensor:
    """y = SSM(x), times SiLU(z) if the gate z is given (mamba_ssm's `selective_scan_fn`), by the
    fastest path that fits: the C kernel for fp32 on CPU (`native`), else the chunked PyTorch
    scan; with autograd, the materialised scan (out= buffers and the kernel are invisible to it)."""
    if native.usable(x, delta, A, B, C, D, z):
        return native.selective_scan(x, delta, (A * LOG2_E).t(), B, C, D, z)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, delta, A, B, C, D)):
        A_bar, B_bar = discretise(delta, A, B)
        y = read_out(linear_scan(A_bar, write_of(B_bar, x)), C, D, x)
    else:
        y = selective_scan_chunked(x, delta, A, B, C, D)
    return y if z is None else y * F.silu(z)


def selective_scan_chunked(x, delta, A, B, C, D, chunk: int | None = None) -> torch.Tensor:
    """y without ever holding more than `chunk` positions of Ā, w and h.

    Internally the state is laid out [b, c, n, d_in]: the long d_in axis innermost makes every
    broadcast (Δ⊗A, B⊗Δx) and the read-out C·h run over contiguous 1536-wide rows instead of
    16-wide ones. Ā and w live in buffers allocated once per call and refilled chunk by chunk
    (~CHUNK_BYTES each, so a batch of noisy copies does not fault in fresh pages per layer): one
    for Ā, two taken in turn for w, which the scan turns into h in place. The per-step update is
    one in-place addcmul on a contiguous [b, n, d_in] slice.
    """
    b, l, d = x.shape
    n = A.shape[1]
    if chunk is None:
        chunk = max(1, min(l, CHUNK_BYTES // (b * d * n * x.element_size())))
    A_t = (A * LOG2_E).t().contiguous()  # [n, d_in], for Ā = 2^(Δ·A·log₂e) as in `discretise`
    A_bar = x.new_empty(b, chunk, n, d)
    # w is scanned into h in place; two buffers in turn, so the last state of one chunk stays
    # readable (as h) while the next chunk is written
    hs = [x.new_empty(b, chunk, n, d) for _ in range(min(2, -(-l // chunk)))]
    h = None  # the state before the chunk; None while it is h_{-1} = 0, which Ā_0 multiplies
    y = torch.empty_like(x)
    for i, s in enumerate(range(0, l, chunk)):
        c = min(chunk, l - s)
        a, w = A_bar[:, :c], hs[i % 2][:, :c]
        skip = 1 if h is None else 0  # Ā_0 · 0: no exp needed
        torch.mul(delta[:, s + skip:s + c, None, :], A_t, out=a[:, skip:]).exp2_()
        torch.mul(B[:, s:s + c, :, None], (delta[:, s:s + c] * x[:, s:s + c]).unsqueeze(-2), out=w)
        a_t, w_t = a.unbind(1), w.unbind(1)  # one call for all the step views
        if h is not None:
            w_t[0].addcmul_(a_t[0], h)
        for t in range(1, c):
            w_t[t].addcmul_(a_t[t], w_t[t - 1])
        h = w_t[-1]
        y[:, s:s + c] = (C[:, s:s + c, None, :] @ w).squeeze(-2) + D * x[:, s:s + c]
    return y


def selective_scan_ref(x, delta, A, B, C, D, z=None) -> torch.Tensor:
    x, delta, A, B, C, D = (t.float() for t in (x, delta, A, B, C, D))
    h = torch.zeros(x.shape[0], x.shape[2], A.shape[1], dtype=torch.float32, device=x.device)
    ys = []
    for t in range(x.shape[1]):
        A_bar = torch.exp(delta[:, t, :, None] * A)
        B_bar = delta[:, t, :, None] * B[:, t, None, :]
        h = A_bar * h + B_bar * x[:, t, :, None]
        ys.append((h * C[:, t, None, :]).sum(-1) + D * x[:, t])
    y = torch.stack(ys, dim=1)
    return y if z is None else y * z.float() * torch.sigmoid(z.float())
