"""The selective scan as a small C kernel (`csrc/selective_scan.c`), compiled at first use.

The PyTorch scan in `scan.py` makes one pass over memory per operation (Ā, w, the update, the
read-out) on [b, n, d_in] tensors far larger than the cache; the kernel keeps one run's state in
cache and does all of them per element, about 3× faster on CPU. It is compiled once per process
with the system C compiler (`$CC`, else cc, gcc or clang; ~0.2 s, no torch headers) into a
temporary directory and loaded with ctypes. Without a working compiler `available()` is False,
a warning says so once, and `scan.selective_scan` keeps to the PyTorch path.
"""
from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("csrc") / "selective_scan.c"
FLAGS = ("-O3", "-fno-trapping-math", "-shared", "-fPIC")
# best first: OpenMP shares torch's threads (see the C source); not every compiler has OpenMP
# (Apple clang) or takes -march=native
VARIANTS = (("-fopenmp", "-march=native"), ("-fopenmp",), ("-march=native",), ())


def available() -> bool:
    return _kernel() is not None


@functools.lru_cache(maxsize=1)
def _kernel():
    errors = []
    for cc in _compilers():
        for extra in VARIANTS:
            with tempfile.TemporaryDirectory() as tmp:
                lib = Path(tmp) / "selective_scan.so"
                proc = subprocess.run([cc, *FLAGS, *extra, str(SOURCE), "-o", str(lib)],
                                      capture_output=True, text=True)
                try:
                    fn = ctypes.CDLL(str(lib)).selective_scan  # stays mapped once the file is gone
                except OSError as e:  # not built, or built against a runtime that cannot be loaded
                    errors.append(f"{Path(cc).name} {' '.join(extra)}: {(proc.stderr or str(e)).strip()[:200]}")
                    continue
            fn.argtypes = [ctypes.c_void_p] * 8 + [ctypes.c_int64] * 4 + [ctypes.c_int]
            fn.restype = None
            return fn
    warnings.warn("compare: could not compile the C selective scan (" + ("; ".join(errors) or "no C compiler "
                  "found; set $CC") + "); using the PyTorch scan, about 3x slower on CPU", RuntimeWarning,
                  stacklevel=3)
    return None


def _compilers() -> list[str]:
    names = [os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc", "clang"]
    return [path for path in dict.fromkeys(shutil.which(n) for n in names) if path]


def selective_scan(x, delta, A2, B, C, D) -> torch.Tensor:
    """y [b, l, d_in] from fp32 CPU tensors; A2 = A·log₂e laid out [n, d_in] (see the C source)."""
    x, delta, A2, B, C, D = (t.contiguous() for t in (x, delta, A2, B, C, D))
    b, l, d = x.shape
    threads = torch.get_num_threads()
    y = torch.empty_like(x)
    h = x.new_empty(threads, A2.shape[0], d)
    _kernel()(*(t.data_ptr() for t in (x, delta, A2, B, C, D, y, h)), b, l, d, A2.shape[0], threads)
    return y
