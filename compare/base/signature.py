"""An analysis' parameters declared once: the API, a study's spec and the app read the same record.

A `Param` is one argument: its name, default (`REQUIRED` when it has none), allowed values
(`choices`) and a model-free check; where it is taken (`api`, `study`). A `Signature` is an
analysis' params. From it the analysis checks what it can before loading a model, the study's
spec (`compare.study.spec`) checks its entries before any model loads (naming the field, e.g.
``analyses[1].trials``), and the app draws its choices and defaults (`ui/`). What needs a model
(is the component a point of it, is the target one token of its tokenizer, is the layer in
range) the analysis checks itself, after these.

Every check raises ValueError naming the field and what is allowed, in one form:
``trials: must be an integer ≥ 1, got 0``; ``scale: 'log' is not allowed; allowed values are
absolute, relative``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

REQUIRED = type("Required", (), {"__repr__": lambda self: "REQUIRED"})()


@dataclass(frozen=True)
class Param:
    """One argument of an analysis (module docstring).

    check(value, field) → the value (normalised), or ValueError naming `field`; None: any value.
    api: the analysis function takes it; study: a study's spec may set it (a parameter may be
    the study's alone, like `variant`, which picks a suite row's IDs).
    """
    name: str
    default: Any = REQUIRED
    choices: tuple | None = None
    check: Callable[[Any, str], Any] | None = None
    api: bool = True
    study: bool = True

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def validate(self, value, field: str | None = None):
        """The value checked (`choices`, then `check`), ValueError naming `field` (default: the name)."""
        field = self.name if field is None else field
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{field}: {value!r} is not allowed; allowed values are {', '.join(map(str, self.choices))}")
        return value if self.check is None else self.check(value, field)


@dataclass(frozen=True)
class Signature:
    """An analysis' parameters, in the order of its function's keywords."""
    analysis: str
    params: tuple[Param, ...]

    def __getitem__(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    @property
    def study(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.study)

    def check(self, **values) -> dict[str, Any]:
        """Each value checked by its parameter, the argument's name in the message."""
        return {name: self[name].validate(value) for name, value in values.items()}


# --- checks: check(value, field) -> value ----------------------------------------------------------

def integer(low: int) -> Callable[[Any, str], int]:
    def check(value, field):
        if isinstance(value, bool) or not _is_int(value) or value < low:
            raise ValueError(f"{field}: must be an integer ≥ {low}, got {value!r}")
        return int(value)
    return check


def level(value, field) -> float:
    """A finite number ≥ 0 (a noise level)."""
    if isinstance(value, bool) or not _is_number(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{field}: must be a finite number ≥ 0, got {value!r}")
    return float(value)


def levels(value, field) -> list[float]:
    """A non-empty list (or 1-D array) of finite numbers ≥ 0."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or getattr(value, "ndim", 1) != 1 \
            or not len(value):
        raise ValueError(f"{field}: must be a non-empty list of finite numbers ≥ 0, got {value!r}")
    return [level(v, f"{field}[{i}]") for i, v in enumerate(value)]


def ints(value, field) -> list[int] | None:
    """A non-empty list of integers, or None (all)."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value or any(isinstance(v, bool) or not _is_int(v) for v in value):
        raise ValueError(f"{field}: must be a non-empty list of integers, or absent for all, got {value!r}")
    return [int(v) for v in value]


def token(value, field):
    """A one-token string or a token ID (whether it is one token, the model's tokenizer says)."""
    if isinstance(value, bool) or not isinstance(value, str) and not _is_int(value) or value == "":
        raise ValueError(f"{field}: must be a one-token string (e.g. ' Mary') or a token ID, got {value!r}")
    return value


def tokens(value, field):
    """A token or a non-empty list of them."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"{field}: must be a token or a non-empty list of tokens, got []")
        return [token(v, f"{field}[{i}]") for i, v in enumerate(value)]
    return token(value, field)


def component(value, field) -> str:
    """The name of a per-layer hook point (which the model has, the analysis checks)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field}: must be the name of a per-layer hook point (e.g. 'h', 'resid_post'), got {value!r}")
    return value


def components(value, field) -> list[str]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{field}: must be a non-empty list of per-layer hook points, got {value!r}")
    return [component(v, f"{field}[{i}]") for i, v in enumerate(value)]


def flag(value, field) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{field}: must be True or False, got {value!r}")
    return value


def _is_int(value) -> bool:
    return hasattr(value, "__index__") and not isinstance(value, bool)


def _is_number(value) -> bool:
    try:
        return not isinstance(value, (str, bytes)) and float(value) == value
    except (TypeError, ValueError):
        return False
