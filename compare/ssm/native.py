"""The Mamba mixer's fused CPU kernels (`csrc/kernels.c`), compiled at first use.

PyTorch runs the mixer's elementwise work one operation at a time, each a pass over memory; the
scan's passes run over [b, n, d_in] tensors far larger than the cache. The kernels do all of an
element's work at once and keep one run's state in cache: the scan is about 3× faster on CPU.
They mirror mamba_ssm's CUDA kernels, `causal_conv1d_fn(..., activation="silu")` and
`selective_scan_fn(..., z)`, and have twins in PyTorch (`scan.py`, `mamba.causal_conv`) that the
tests hold them against, as they hold the kernels' exp, exp2, softplus and SiLU against float64.

The library is compiled once per process with the system C compiler (`$CC`, else cc, gcc or
clang; ~0.3 s, no torch headers) into a temporary directory and loaded with ctypes. Without a
working compiler `available()` is False, a warning says so once, and the model keeps to the
PyTorch paths.

The kernels compute in fp32. Under a reduced dtype (`mamba.MambaLM.cast_`) the conv, the SSM and
the residual stream stay fp32; the two inputs that come straight out of the bf16 in_proj, the
conv's x and the scan's gate z, are read as bf16 and widened on load, which saves a conversion
pass over each. Whether the CPU runs
bf16 / fp16 matmuls in hardware (`matmul_units`: AMX or AVX512-BF16 on x86, read from
/proc/cpuinfo) decides whether a reduced dtype is faster at all; `warn_if_slow` says so once.
"""
from __future__ import annotations

import ctypes
import functools
import os
import shlex
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("csrc") / "kernels.c"
FLAGS = ("-O3", "-fno-trapping-math", "-shared", "-fPIC")
# best first: OpenMP shares torch's threads (see the C source); not every compiler has OpenMP
# (Apple clang) or takes -march=native
VARIANTS = (("-fopenmp", "-march=native"), ("-fopenmp",), ("-march=native",), ())
ELEMENTWISE = ("exp2", "exp", "softplus", "silu")  # the C enum's order
_P, _I, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
SIGNATURES = {
    "causal_conv1d_silu": [_P, _I, _INT] + [_P] * 3 + [_I] * 4 + [_INT],
    "selective_scan": [_P] * 4 + [_I, _P, _I, _P, _P, _I, _INT, _P, _I, _P, _P] + [_I] * 4 + [_INT],
    "elementwise": [_INT, _P, _P, _I, _INT],
}


def available() -> bool:
    return _library() is not None


def usable(*tensors: torch.Tensor | None, bf16: tuple[torch.Tensor | None, ...] = ()) -> bool:
    """Whether the kernels can take these tensors: fp32 on CPU (those in `bf16`, the conv's x
    and the scan's gate z, also bf16), no autograd, library built."""
    given = [t for t in tensors if t is not None]
    halves = [t for t in bf16 if t is not None]
    return (all(t.device.type == "cpu" and t.dtype == torch.float32 for t in given)
            and all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.bfloat16) for t in halves)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in given + halves)) and available())


@functools.lru_cache(maxsize=1)
def _library():
    errors = []
    for cc in _compilers():
        for extra in VARIANTS:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "kernels.so"
                proc = subprocess.run([*cc, *FLAGS, *extra, str(SOURCE), "-o", str(path)],
                                      capture_output=True, text=True)
                try:
                    lib = ctypes.CDLL(str(path))  # stays mapped once the file is gone
                except OSError as e:  # not built, or built against a runtime that cannot be loaded
                    why = (proc.stderr or str(e)).strip()[:200]
                    errors.append(f"{Path(cc[0]).name} {' '.join(extra)}: {why}")
                    continue
            for name, argtypes in SIGNATURES.items():
                getattr(lib, name).argtypes = argtypes
                getattr(lib, name).restype = None
            return lib
    warnings.warn("compare: could not compile the C kernels (" + ("; ".join(errors) or "no C compiler "
                  "found; set $CC") + "); the Mamba mixer runs on PyTorch alone, about 30% slower on CPU",
                  RuntimeWarning, stacklevel=3)
    return None


def _compilers() -> list[list[str]]:
    """Command lines to try: $CC as given (it may carry a launcher or flags), else the usual names."""
    if os.environ.get("CC"):
        command = shlex.split(os.environ["CC"])
        return [command] if command and shutil.which(command[0]) else []
    paths = dict.fromkeys(shutil.which(name) for name in ("cc", "gcc", "clang"))
    return [[path] for path in paths if path]


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _rows(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """[b, l, m] as the kernels read it: unit stride along m and a row stride ld between
    positions (element (r, t, j) at r·l·ld + t·ld + j). Column slices of a wider matrix qualify
    as they are; anything else is copied."""
    b, l, m = t.shape
    ld = t.stride(1) if l > 1 else (t.stride(0) if b > 1 else m)
    if (m > 1 and t.stride(2) != 1) or (b > 1 and t.stride(0) != l * ld) or ld < m:
        return _rows(t.contiguous())
    return t, ld


def selective_scan(x, delta, A2, B, C, D, z=None, h0=None) -> torch.Tensor:
    """y [b, l, d_in], times SiLU(z) if z (fp32 or bf16) is given; A2 = A·log₂e laid out [n, d_in]
    (see the C source); h0 [b or 1, d_in, n]: the state before the first position (default 0)."""
    x, delta, A2, D = (t.contiguous() for t in (x, delta, A2, D))
    if h0 is not None:  # the kernel's layout [·, n, d_in]; one row shared by every run reads with stride 0
        h0 = h0.transpose(-1, -2).contiguous()
    ld_h0 = 0 if h0 is None or h0.shape[0] == 1 else h0[0].numel()
    (B, ld_B), (C, ld_C) = _rows(B), _rows(C)
    z, ld_z = (None, 0) if z is None else _rows(z)
    b, l, d = x.shape
    n = A2.shape[0]
    threads = torch.get_num_threads()
    y = torch.empty_like(x)
    scratch = x.new_empty(threads, n, d)
    z_bf16 = int(z is not None and z.dtype == torch.bfloat16)
    _library().selective_scan(*map(_ptr, (x, delta, A2, B)), ld_B, _ptr(C), ld_C, _ptr(D), _ptr(z), ld_z, z_bf16,
                              _ptr(h0), ld_h0, *map(_ptr, (y, scratch)), b, l, d, n, threads)
    return y


def causal_conv1d_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """SiLU of the depthwise causal conv of x [b, l, d_in] (fp32 or bf16), in fp32; weight
    [d_in, 1, k] as nn.Conv1d keeps it."""
    x, ld_x = _rows(x)
    w = weight[:, 0].t().contiguous()  # [k, d_in]
    bias = None if bias is None else bias.contiguous()
    b, l, d = x.shape
    y = x.new_empty(b, l, d, dtype=torch.float32)
    _library().causal_conv1d_silu(x.data_ptr(), ld_x, int(x.dtype == torch.bfloat16), *map(_ptr, (w, bias, y)),
                                  b, l, d, w.shape[0], torch.get_num_threads())
    return y


def elementwise(op: str, x: torch.Tensor) -> torch.Tensor:
    """The kernels' exp2, exp, softplus or SiLU of each element of fp32 x."""
    x = x.contiguous()
    y = torch.empty_like(x)
    _library().elementwise(ELEMENTWISE.index(op), x.data_ptr(), y.data_ptr(), x.numel(),
                           torch.get_num_threads())
    return y


# CPU features (/proc/cpuinfo "flags" on x86, "Features" on Arm) that run a dtype's matmuls in
# hardware; without one, torch converts to fp32 and back around every multiply and a bf16
# matmul runs slower than an fp32 one (7× for an in_proj-shaped matmul on an AVX2 machine)
MATMUL_UNITS = {
    torch.bfloat16: {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16", "bf16": "Arm BF16"},
    torch.float16: {"amx_fp16": "AMX-FP16", "avx512_fp16": "AVX512-FP16", "asimdhp": "Arm FP16"},
}
_WARNED: set = set()  # dtypes warned about in this process


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from /proc/cpuinfo; None where it cannot be read (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


def matmul_units(dtype: torch.dtype) -> list[str] | None:
    """The CPU's units that run `dtype` matmuls natively (e.g. ["AMX-BF16", "AVX512-BF16"]), []
    for none, None where the CPU's features cannot be read."""
    flags = cpu_flags()
    if flags is None:
        return None
    return [name for flag, name in MATMUL_UNITS.get(dtype, {}).items() if flag in flags]


def warn_if_slow(dtype: torch.dtype, device: torch.device, stacklevel: int = 2) -> None:
    """Warn once per dtype and process when a reduced dtype is asked for on a CPU that has no
    hardware for its matmuls: the model then runs slower than in fp32, not faster."""
    if torch.device(device).type != "cpu" or dtype not in MATMUL_UNITS or dtype in _WARNED:
        return
    units = matmul_units(dtype)
    if units:
        return
    _WARNED.add(dtype)
    name = str(dtype).removeprefix("torch.")
    *others, last = MATMUL_UNITS[dtype].values()
    needed = f"{', '.join(others)} or {last}"
    why = ("this CPU has no " + needed + " (not among the flags of /proc/cpuinfo)" if units is not None
           else "the CPU's features could not be read (no /proc/cpuinfo), so " + needed + " may be missing")
    warnings.warn(f"compare: dtype={name} on CPU: {why}; torch then emulates {name} matmuls and the model "
                  f"runs slower than in float32 (7× for an in_proj-shaped matmul on an AVX2 machine), "
                  f"while accurate to {name} only. Use dtype='float32' on this machine",
                  RuntimeWarning, stacklevel=stacklevel + 1)
