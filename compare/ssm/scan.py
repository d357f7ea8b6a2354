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

Which scan runs where (`selective_scan` for y alone, `linear_scan` for the materialised h):
    CPU, fp32           the C kernel (`native`); without a compiler, `selective_scan_chunked`
                        and the in-place loop of `linear_scan` (one step per position: on a CPU
                        a step costs a few µs of overhead against ~25 µs of work)
    CUDA + mamba_ssm    `selective_scan_fn` (`cuda`), y only
    any other device    `linear_scan_parallel`: a chunked parallel scan with no loop over
                        positions (a GPU pays a kernel launch per step, thousands per forward)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import cuda, native

LOG2_E = math.log2(math.e)
CHUNK_BYTES = 4 * 2**20  # per buffer: 42 steps at d_in=1536, n=16, batch 1; small enough to reuse heap pages
PARALLEL_CHUNK = 16  # positions combined by doubling in `linear_scan_parallel` (log2: 4 rounds)
PARALLEL_BLOCK_BYTES = 256 * 2**20  # per buffer of `selective_scan_parallel` (a GPU's memory is large, its launches dear)


def discretise(delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor):
    """Zero-order hold for A, Euler for B (as mamba_ssm): Ā = exp(ΔA), B̄ = ΔB.

    exp(ΔA) is evaluated as 2^(Δ·(A·log₂e)), the form mamba_ssm's CUDA kernel uses: on CPU too
    exp2 runs ~2.6× faster than exp, and Ā is the scan's largest elementwise cost; it is taken in
    place of the product (one [b, l, d_in, n] tensor allocated, not two; autograd keeps Ā alone).
    """
    return (delta.unsqueeze(-1) * (A * LOG2_E)).exp2_(), delta.unsqueeze(-1) * B.unsqueeze(-2)


def write_of(B_bar: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """w = B̄·x, what enters the state at each position."""
    return B_bar * x.unsqueeze(-1)


def linear_scan(A_bar: torch.Tensor, write: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """All states h of h_t = Ā_t h_{t-1} + w_t (h_{-1} = h0, default 0), as one new tensor: a loop
    over positions on CPU, `linear_scan_parallel` on any other device. Ā may have batch size 1
    against w's b (one Ā for many writes, as patching scans its edits)."""
    if write.device.type != "cpu":
        return linear_scan_parallel(A_bar, write, h0)
    if _tracked(A_bar, write, h0):
        return LinearScan.apply(A_bar, write, h0, None)
    h = write.expand(torch.broadcast_shapes(A_bar.shape, write.shape)).clone()
    if h0 is not None:
        h[:, 0].addcmul_(A_bar[:, 0], h0)
    for t in range(1, h.shape[1]):
        h[:, t].addcmul_(A_bar[:, t], h[:, t - 1])
    return h


def _tracked(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


class LinearScan(torch.autograd.Function):
    """The scan under autograd, keeping only Ā, h0 and the states h for backward.

    Built from its own operations, autograd would keep every step's (or, in the parallel scan,
    every doubling round's) intermediate tensors: ~10 times h's size where h is read under grad
    in a trace, ~2 GB a layer at mamba-130m's width and T = 2048. The gradient is itself a
    scan, backwards in time: with g_t = ∂L/∂w_t,
        g_t = ∂L/∂h_t + Ā_{t+1} g_{t+1},   ∂L/∂Ā_t = g_t h_{t-1},   ∂L/∂h0 = Ā_0 g_0,
    computed by the same scans (so on the GPU without a loop over positions); it is built from
    differentiable operations, so a second derivative works too. `chunk` None: `linear_scan`'s
    choice of scan; else `linear_scan_parallel` with that chunk.
    """

    @staticmethod
    def forward(A_bar, write, h0, chunk):
        if chunk is None:
            return linear_scan(A_bar, write, h0)
        return linear_scan_parallel(A_bar, write, h0, chunk)

    @staticmethod
    def setup_context(ctx, inputs, output):
        A_bar, _, h0, ctx.chunk = inputs
        ctx.shapes = A_bar.shape, inputs[1].shape
        ctx.save_for_backward(A_bar, h0, output)

    @staticmethod
    def backward(ctx, grad_h):
        A_bar, h0, h = ctx.saved_tensors
        a_shape, w_shape = ctx.shapes
        if grad_h.device.type == "cpu" and ctx.chunk is None and not torch.is_grad_enabled():
            g = reverse_scan(A_bar, grad_h)
        else:  # the reverse scan as a `LinearScan` over the time-flipped sequence, itself differentiable
            # (a second derivative) and loop-free off the CPU; Ā_{t+1} pairs with g_{t+1}
            A_next = torch.cat([A_bar[:, 1:], torch.zeros_like(A_bar[:, :1])], 1).flip(1)
            g = LinearScan.apply(A_next, grad_h.flip(1), None, ctx.chunk).flip(1)
        h_prev = torch.cat([(torch.zeros_like(h[:, :1]) if h0 is None else h0.unsqueeze(1).expand_as(h[:, :1])),
                            h[:, :-1]], 1)
        grad_A = (g * h_prev).sum_to_size(a_shape) if ctx.needs_input_grad[0] else None
        grad_w = g.sum_to_size(w_shape) if ctx.needs_input_grad[1] else None
        grad_h0 = (A_bar[:, 0] * g[:, 0]).sum_to_size(h0.shape) if ctx.needs_input_grad[2] else None
        return grad_A, grad_w, grad_h0, None


def reverse_scan(A_bar: torch.Tensor, grad_h: torch.Tensor) -> torch.Tensor:
    """The gradients g_t = ∂L/∂h_t + Ā_{t+1} g_{t+1} of `LinearScan`, by `linear_scan`'s in-place
    loop run backwards in time (no flipped copies of Ā and the gradient)."""
    g = grad_h.expand(torch.broadcast_shapes(A_bar.shape, grad_h.shape)).clone()
    for t in range(g.shape[1] - 2, -1, -1):
        g[:, t].addcmul_(A_bar[:, t + 1], g[:, t + 1])
    return g


def linear_scan_parallel(A_bar: torch.Tensor, write: torch.Tensor, h0: torch.Tensor | None = None,
                         chunk: int = PARALLEL_CHUNK) -> torch.Tensor:
    """`linear_scan` (h_{-1} = h0, default 0) without a loop over positions, on any device.

    A chunked parallel scan: the positions are cut into chunks of `chunk` and, within every
    chunk at once, combined by doubling (Hillis–Steele): after the round with offset k each
    position holds (P, h), the product of the Ā and the state over its last 2k positions in the
    chunk, from
        h_t ← h_t + P_t · h_{t−k},    P_t ← P_t · P_{t−k}.
    After log2(chunk) rounds h is each chunk's state from a zero start and P the product of its
    Ā from the chunk's start. The states at the chunks' ends then satisfy the same recurrence
    over chunks, H_k = P_end,k · H_{k−1} + h_end,k, scanned by this function again (recursion
    over ever fewer positions), and every state gets its chunk's entry state carried in:
    h_t += P_t · H_{k−1}.

    Only products of Ā and sums are formed, never a quotient or a logarithm: Ā underflowing
    to 0 (a state reset) is exact, as in the sequential loop, and any Ā works, edited ones
    included. The scan is linear in w, so an increment scanned on its own adds exactly what it
    adds inside the recurrence (`mamba.MambaMixer`'s h edits). Rounding differs from the loop
    by the order of the sums (log2 of the length more terms), not in kind. Each round writes
    into the other of two buffer pairs (out=, ~4 passes over w's size per tensor); under
    autograd the scan is a `LinearScan`, which keeps none of them.
    """
    if _tracked(A_bar, write, h0):
        return LinearScan.apply(A_bar, write, h0, chunk)
    b, l = write.shape[:2]
    feat = write.shape[2:]
    c = min(max(2, chunk), l)  # ≥ 2, or the recursion over chunk ends would not shrink
    nc = -(-l // c)
    if h0 is not None:
        write = torch.cat([torch.addcmul(write[:, :1], A_bar[:, :1], h0.unsqueeze(1)), write[:, 1:]], 1)
    # padded after the last position (never read by a real one): new tensors, the inputs stay as they are
    pad = [0, 0] * len(feat) + [0, nc * c - l]
    h = F.pad(write, pad).view(b, nc, c, *feat)
    a = F.pad(A_bar, pad, value=1.0).view(A_bar.shape[0], nc, c, *A_bar.shape[2:])
    h_next, a_next = torch.empty_like(h), torch.empty_like(a)
    k = 1
    while k < c:
        torch.addcmul(h[:, :, k:], a[:, :, k:], h[:, :, :-k], out=h_next[:, :, k:])
        h_next[:, :, :k] = h[:, :, :k]
        torch.mul(a[:, :, k:], a[:, :, :-k], out=a_next[:, :, k:])
        a_next[:, :, :k] = a[:, :, :k]
        h, h_next, a, a_next = h_next, h, a_next, a
        k *= 2
    if nc > 1:
        entry = linear_scan_parallel(a[:, :, -1], h[:, :, -1], chunk=chunk)  # the state after each chunk
        h[:, 1:].addcmul_(a[:, 1:], entry[:, :-1].unsqueeze(2))
    return h.reshape(b, nc * c, *feat)[:, :l]


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


def selective_scan(x, delta, A, B, C, D, z=None, h0=None) -> torch.Tensor:
    """y = SSM(x), times SiLU(z) if the gate z is given (mamba_ssm's `selective_scan_fn`), by the
    fastest path that fits: the C kernel for fp32 on CPU (`native`), mamba_ssm's kernel on CUDA
    (`cuda`), else the chunked PyTorch scan (on CPU) or the parallel one (elsewhere); with
    autograd, the materialised scan (out= buffers and the C kernel are invisible to it).

    h0 [b or 1, d_in, n]: the state before the first position (default 0), as an earlier part of
    the sequence left it (`state_after`); mamba_ssm's kernel takes none, so then the PyTorch scan runs.
    """
    if native.usable(x, delta, A, B, C, D, h0, bf16=(z,)):  # a bf16 gate is read as it is
        return native.selective_scan(x, delta, (A * LOG2_E).t(), B, C, D, z, h0)
    z = None if z is None else z.float()
    if h0 is None and cuda.usable(x, delta, A, B, C, D, z):
        return cuda.selective_scan(x, delta, A, B, C, D, z)
    if _tracked(x, delta, A, B, C, D, h0):
        A_bar, B_bar = discretise(delta, A, B)
        y = read_out(linear_scan(A_bar, write_of(B_bar, x), h0), C, D, x)
    elif x.device.type == "cpu":
        y = selective_scan_chunked(x, delta, A, B, C, D, h0=h0)
    else:
        y = selective_scan_parallel(x, delta, A, B, C, D, h0=h0)
    return y if z is None else y * F.silu(z)


def state_after(x, delta, A, B, h0=None, chunk: int = 64) -> torch.Tensor:
    """The state h after the last position [b, d_in, n] (h_{-1} = h0, default 0): what a sequence
    hands on to the positions after it, `chunk` positions of Ā and w held at a time."""
    h = h0
    for s in range(0, x.shape[1], chunk):
        A_bar, B_bar = discretise(delta[:, s:s + chunk], A, B[:, s:s + chunk])
        h = linear_scan(A_bar, write_of(B_bar, x[:, s:s + chunk]), h)[:, -1]
    return torch.zeros(x.shape[0], *A.shape, dtype=x.dtype, device=x.device) if h is None else h


def selective_scan_parallel(x, delta, A, B, C, D, block: int | None = None,
                            chunk: int = PARALLEL_CHUNK, h0: torch.Tensor | None = None) -> torch.Tensor:
    """y by `linear_scan_parallel`, `block` positions at a time (default: ~PARALLEL_BLOCK_BYTES
    per buffer), the state carried from block to block (from h0 [b or 1, d_in, n], default 0):
    no loop over positions, and Ā, w and h never held for more than a block."""
    b, l, d = x.shape
    n = A.shape[1]
    if block is None:
        block = max(1, min(l, PARALLEL_BLOCK_BYTES // (b * d * n * x.element_size())))
    A2 = A * LOG2_E
    y = torch.empty_like(x)
    h = h0
    for s in range(0, l, block):
        e = min(l, s + block)
        A_bar = torch.exp2(delta[:, s:e, :, None] * A2)
        write = (delta[:, s:e] * x[:, s:e]).unsqueeze(-1) * B[:, s:e, None, :]
        states = linear_scan_parallel(A_bar, write, h0=h, chunk=chunk)
        y[:, s:e] = read_out(states, C[:, s:e], D, x[:, s:e])
        h = states[:, -1]
    return y


def selective_scan_chunked(x, delta, A, B, C, D, chunk: int | None = None,
                           h0: torch.Tensor | None = None) -> torch.Tensor:
    """y without ever holding more than `chunk` positions of Ā, w and h (h_{-1} = h0 [b or 1,
    d_in, n], default 0).

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
    # the state before the chunk; None while it is h_{-1} = 0, which Ā_0 multiplies
    h = None if h0 is None else h0.transpose(-1, -2).to(x.dtype)
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


def selective_scan_ref(x, delta, A, B, C, D, z=None, h0=None) -> torch.Tensor:
    """In fp32, or in fp64 when x is fp64 (the tests' exact reference)."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x, delta, A, B, C, D = (t.to(dtype) for t in (x, delta, A, B, C, D))
    h = torch.zeros(x.shape[0], x.shape[2], A.shape[1], dtype=dtype, device=x.device)
    if h0 is not None:
        h = h + h0.to(dtype)
    ys = []
    for t in range(x.shape[1]):
        A_bar = torch.exp(delta[:, t, :, None] * A)
        B_bar = delta[:, t, :, None] * B[:, t, None, :]
        h = A_bar * h + B_bar * x[:, t, :, None]
        ys.append((h * C[:, t, None, :]).sum(-1) + D * x[:, t])
    y = torch.stack(ys, dim=1)
    z = None if z is None else z.to(dtype)
    return y if z is None else y * z * torch.sigmoid(z)


def alpha_of(delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Mamba's hidden attention α [C, T, T] from Δ [T, C], A [C, n], B, C [T, n] by the scan's own
    recurrence, M_t = Ā_t ⊙ M_{t-1} with M_t[t] = B̄_t (`compare.hidden_attention`)."""
    A_bar, B_bar = discretise(delta, A, B)  # [T, C, n] each
    T, Cn = delta.shape
    alpha = delta.new_zeros(T, T, Cn)
    M = torch.zeros_like(B_bar)  # M[s] = (Π_{k=s+1..t} Ā_k) ⊙ B̄_s after step t
    for t in range(T):
        M[:t] *= A_bar[t]
        M[t] = B_bar[t]
        alpha[t, :t + 1] = M[:t + 1] @ C[t]
    return alpha.permute(2, 0, 1)
