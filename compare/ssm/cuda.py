"""mamba_ssm's and causal-conv1d's CUDA kernels (the [cuda] extra), when they are installed.

The Mamba mixer (`mamba.MambaMixer`) calls them on CUDA tensors where it computes what they
compute: `causal_conv1d_silu` is ``causal_conv1d_fn(..., activation="silu")`` (the conv point
x is its output either way), and `selective_scan` is ``selective_scan_fn(..., z=z)``, taken only
when no SSM-internal point (Ā, B̄, w, h, h_readout) is read or edited: the rule of the CPU's
fused C kernels (`hooks.HookPoint.requested`). When points are read or edited, the state is
materialised and scanned by `scan.linear_scan_parallel` instead.

The imports are guarded and lazy (mamba_ssm pulls in Triton, seconds to import): without the
packages, or on a machine where they fail to load, `available()` is False, `reason()` says why,
and the mixer runs on PyTorch alone (`scan.selective_scan_parallel` on the GPU). Set
COMPARE_CUDA_KERNELS=0, or use `disabled()`, to measure or test that path with the kernels
installed.

Layout: ours is [b, l, d_in] (and [b, l, n] for B, C); the kernels take [b, d_in, l] and
[b, n, l]. Inputs are passed as transposed views (the kernels make them contiguous where they
need to) and y comes back as a transposed view of the kernel's [b, d_in, l] output.
"""
from __future__ import annotations

import functools
import os
import threading
from contextlib import contextmanager

import torch

_LOCAL = threading.local()
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@functools.lru_cache(maxsize=1)
def _kernels():
    """(selective_scan_fn, causal_conv1d_fn, why): the functions, None where not importable."""
    why = []
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except (ImportError, OSError) as err:  # not installed, or built against another torch / CUDA
        selective_scan_fn = None
        why.append(f"mamba_ssm: {type(err).__name__}: {err}"[:200])
    try:
        from causal_conv1d import causal_conv1d_fn
    except (ImportError, OSError) as err:
        causal_conv1d_fn = None
        why.append(f"causal_conv1d: {type(err).__name__}: {err}"[:200])
    return selective_scan_fn, causal_conv1d_fn, "; ".join(why)


def enabled() -> bool:
    return os.environ.get("COMPARE_CUDA_KERNELS", "1") != "0" and not getattr(_LOCAL, "off", False)


@contextmanager
def disabled():
    """Within (this thread): the mixer ignores the CUDA kernels, as if they were not installed."""
    before = getattr(_LOCAL, "off", False)
    _LOCAL.off = True
    try:
        yield
    finally:
        _LOCAL.off = before


def available() -> bool:
    """mamba_ssm's selective scan can be called (CUDA present, package importable, not disabled)."""
    return enabled() and torch.cuda.is_available() and _kernels()[0] is not None


def conv_available() -> bool:
    return enabled() and torch.cuda.is_available() and _kernels()[1] is not None


def reason() -> str:
    """Why the kernels are not used, for benchmarks and skipped tests ('' when they are)."""
    if not enabled():
        return "disabled (COMPARE_CUDA_KERNELS=0 or cuda.disabled())"
    if not torch.cuda.is_available():
        return "no CUDA device"
    return _kernels()[2]


def _on_cuda(tensors) -> bool:
    return all(t.device.type == "cuda" and t.dtype in DTYPES for t in tensors if t is not None)


def usable(*tensors: torch.Tensor | None) -> bool:
    """Whether `selective_scan` can take these tensors: all on CUDA, float, kernels importable."""
    return _on_cuda(tensors) and any(t is not None and t.is_cuda for t in tensors) and available()


def conv_usable(*tensors: torch.Tensor | None) -> bool:
    return _on_cuda(tensors) and any(t is not None and t.is_cuda for t in tensors) and conv_available()


def selective_scan(x, delta, A, B, C, D, z=None) -> torch.Tensor:
    """y [b, l, d_in] of `scan.selective_scan` (times SiLU(z) if z is given) by mamba_ssm's kernel.

    Δ arrives after softplus (the mixer's delta point), so the kernel's own softplus and bias
    are off; A and D are fp32, as mamba_ssm keeps them.
    """
    fn = _kernels()[0]
    y = fn(x.transpose(1, 2), delta.transpose(1, 2), A.float().contiguous(), B.transpose(1, 2),
           C.transpose(1, 2), D.float(), None if z is None else z.transpose(1, 2), delta_softplus=False)
    return y.transpose(1, 2)


def causal_conv1d_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """SiLU of the depthwise causal conv of x [b, l, d_in] by causal-conv1d's kernel; weight
    [d_in, 1, k] as nn.Conv1d keeps it. x's own [b, l, d_in] layout is the kernel's channel-last
    one when d_in is a multiple of 8 (its requirement); else x is transposed to [b, d_in, l]."""
    fn = _kernels()[1]
    w = weight[:, 0].contiguous()
    bias = None if bias is None else bias.to(w.dtype).contiguous()
    if x.shape[-1] % 8 == 0:
        return fn(x.contiguous().transpose(1, 2), w, bias, activation="silu").transpose(1, 2)
    return fn(x.transpose(1, 2).contiguous(), w, bias, activation="silu").transpose(1, 2)
