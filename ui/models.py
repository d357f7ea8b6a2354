"""Model sources and the process-wide model cache shared by every session of the app.

A source is anything `compare.load_model` accepts: an alias, a Hub id or a local directory.
Precedence: `configure(...)` (the CLI flags) over the MAMBA_MODEL / GPT2_MODEL environment
variables over the defaults, so the same app runs online against the Hub and offline against
local copies. Each source is loaded once per process; a lock keeps two sessions that ask at the
same time from loading it twice.
"""
from __future__ import annotations

import os
import threading

from compare import Model
from compare.loading import cached_model

MODELS = ("mamba", "gpt2")
"""The two roles the app compares, in display order; Mamba first, as in `compare.compare`."""

DEFAULTS = {"mamba": "mamba-130m", "gpt2": "gpt2"}
ENV_VARS = {"mamba": "MAMBA_MODEL", "gpt2": "GPT2_MODEL"}

_configured: dict[str, str] = {}
_lock = threading.Lock()


def configure(**sources: str | None) -> None:
    """Set the sources of this process (`mamba=`, `gpt2=`); None leaves a role as it was."""
    unknown = sorted(set(sources) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown model roles {unknown}; allowed: {list(MODELS)}")
    _configured.update({role: str(src) for role, src in sources.items() if src is not None})


def source(role: str) -> str:
    """Where the model of `role` comes from: configured, else its env var, else the default."""
    if role not in MODELS:
        raise ValueError(f"model must be one of {list(MODELS)}, got {role!r}")
    return _configured.get(role) or os.environ.get(ENV_VARS[role]) or DEFAULTS[role]


def get(role: str) -> Model:
    """The loaded model of `role`, loading it on first use (thread-safe, once per source)."""
    src = source(role)
    with _lock:  # the cache itself is not thread-safe: two sessions would load a model twice
        return cached_model(src)


def pair() -> tuple[Model, ...]:
    """Both models, in `MODELS` order."""
    return tuple(get(role) for role in MODELS)
