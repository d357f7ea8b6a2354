"""Memory: what the OS can give this process, and refusing work that would not fit before it starts.

Every estimate is checked against half of what is available now (Linux's MemAvailable), which
leaves room for the model, the libraries and estimates that run a little short. Where the
available memory is unknown (not Linux), nothing is refused.
"""
from __future__ import annotations

import ctypes
import ctypes.util

try:  # glibc only; elsewhere freed memory is left to the platform's allocator
    _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _LIBC.malloc_trim
except (OSError, AttributeError):
    _LIBC = None


def available_bytes() -> int | None:
    """Memory the OS can give this process now (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


def size_text(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def fits(need: int) -> bool:
    """Whether `need` bytes fit in half of the memory available now (True where that is unknown)."""
    free = available_bytes()
    return free is None or need <= free // 2


def check_fits(need: int, what: str, advice: str) -> None:
    """Raise a ValueError with the estimate, the limit and `advice` when `need` bytes won't fit.

    what: the work and its size, e.g. "a 23,000-token prompt through mamba-130m".
    """
    free = available_bytes()
    if free is not None and need > free // 2:
        raise ValueError(f"{what} needs about {size_text(need)}, more than half of the {size_text(free)} of "
                         f"memory available; {advice}")


def return_freed() -> None:
    """Hand the memory that freed arrays leave in the heap back to the OS (glibc's malloc_trim).

    After the first large array is freed, glibc serves arrays of that size from the heap instead
    of fresh mappings, and a loop of [T, V] arrays then fragments it: a 400-prompt suite grew the
    resident set by 719 MiB with nothing alive, against 93 MiB with a fixed mmap threshold.
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
