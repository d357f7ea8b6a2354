"""One calling convention for every analysis (STYLE rule 23).

Every analysis takes ``model=`` one `Model` handle or source, or a list of them (rows for each,
side by side), and ``dtype=``, ``device=``, ``progress=``, ``stop=`` the same way. `analysis`
implements that once, as a decorator over the analysis' own function:

- ``dtype`` ("float32" default, "bfloat16") and ``device`` ("cpu", "cuda:0"; default CUDA when
  available) load a model given by source (`cached_model`, once per process); a loaded handle
  keeps its own, and another dtype or device than it has is refused, naming the argument.
- ``progress(done, total)`` and ``stop`` (``is_set()``) are checked before any compute. An
  analysis that counts its own steps gets them (across a list, its counts add up model after
  model); one that does not is told ``progress(models_done, models)`` and stopped between models.
- A list of models runs the analysis once per model and concatenates the frames; ``attrs`` keep
  each model's own attrs under ``attrs["by_model"][name]``, and at the top level what they share:
  a value equal in every model, dictionaries keyed by model merged, ``stopped`` if any stopped,
  ``overflowed`` summed, anything else as ``{model name: value}``. Analyses that return one
  object per model (an `AttentionMap`) return a list of them. One model (not in a list) returns
  exactly what the analysis returns.

An analysis that already runs its models together (``native=True``: patch_sweep and
causal_trace check every model before any compute and count progress across them) gets the
resolved list of handles and loops itself; its attrs keyed by model are split into
``attrs["by_model"]`` the same way.
"""
from __future__ import annotations

import functools
import inspect

import numpy as np
import pandas as pd

from ..base.checks import check_callbacks
from ..handle.inputs import check_device, handle_of, handles_of  # noqa: F401  (the convention's resolvers)
from ..handle.model import Model

CONVENTION = ("model", "dtype", "device", "progress", "stop")


def is_list(model) -> bool:
    return isinstance(model, (list, tuple))


def component_of(handle: Model, component) -> str:
    """`component`, or when None the one the model's family names (`Family.default_component`)."""
    return handle.arch.default_component if component is None else component


def analysis(fn=None, *, native: bool = False):
    """The decorator that gives `fn` the calling convention (module docstring).

    `fn` takes ``model=`` one loaded handle (``native``: the list of handles) and whichever of
    ``progress``/``stop`` it declares; the wrapper adds ``dtype=`` and ``device=``.
    """
    if fn is None:
        return functools.partial(analysis, native=native)
    params = inspect.signature(fn).parameters
    own = {name for name in ("progress", "stop", "dtype", "device") if name in params}

    @functools.wraps(fn)
    def wrapper(*args, model, dtype=None, device=None, progress=None, stop=None, **kwargs):
        check_callbacks(progress, stop)
        handles = handles_of(model, dtype, device)
        extra = {k: v for k, v in (("dtype", dtype), ("device", device)) if k in own}
        if native:
            calls = {k: v for k, v in (("progress", progress), ("stop", stop)) if k in own}
            result = fn(*args, model=handles, **extra, **calls, **kwargs)
            if is_list(model) and isinstance(result, pd.DataFrame):
                result.attrs["by_model"] = split_attrs(result.attrs, [h.name for h in handles])
            return result
        if not is_list(model) and {"progress", "stop"} <= own:
            return fn(*args, model=handles[0], progress=progress, stop=stop, **extra, **kwargs)
        results, stopped = {}, False
        counted = Counted(progress, len(handles))
        for m, handle in enumerate(handles):
            if m > 0 and stop is not None and stop.is_set():
                stopped = True
                break
            calls = {}
            if "progress" in own:
                calls["progress"] = counted.of(m)
            if "stop" in own:
                calls["stop"] = stop
            results[handle.name] = fn(*args, model=handle, **extra, **calls, **kwargs)
            if "progress" not in own and progress is not None:
                progress(m + 1, len(handles))
            if "stop" in own and isinstance(results[handle.name], pd.DataFrame) and \
                    results[handle.name].attrs.get("stopped"):
                stopped = True
                break
            counted.finish()
        if not is_list(model):
            return results[handles[0].name]
        return side_by_side(results, stopped)

    wrapper.__signature__ = _signature(fn)
    wrapper.convention = "native" if native else "per model"
    return wrapper


class Counted:
    """progress(done, total) across the models of a list, from each model's own counts: the runs
    of the models finished plus this one's, out of those plus this model's total for each left."""

    def __init__(self, progress, n_models: int):
        self.progress, self.n_models, self.finished, self.total = progress, n_models, 0, 0

    def of(self, m: int):
        if self.progress is None:
            return None

        def report(done, total):
            self.total = total
            self.progress(self.finished + done, self.finished + total * (self.n_models - m))
        return report

    def finish(self) -> None:
        """The model that ran last is done: its total counts as finished."""
        self.finished, self.total = self.finished + self.total, 0


def side_by_side(results: dict, stopped: bool):
    """Frames concatenated with their attrs kept per model, or a list of the per-model objects."""
    values = list(results.values())
    if not all(isinstance(v, pd.DataFrame) for v in values):
        return values
    frames = []
    for frame in values:
        bare = frame.copy(deep=False)
        bare.attrs = {}
        frames.append(bare)
    df = pd.concat(frames, ignore_index=True)
    by_model = {name: dict(frame.attrs) for name, frame in results.items()}
    df.attrs = merge_attrs(by_model)
    if stopped or "stopped" in df.attrs:
        df.attrs["stopped"] = bool(stopped or df.attrs.get("stopped"))
    df.attrs["by_model"] = by_model
    return df


def split_attrs(attrs: dict, names: list[str]) -> dict[str, dict]:
    """Each model's attrs from attrs that a native analysis keys by model: the model's entry of a
    dictionary keyed by model names, any other value as it is."""
    def mine(value, name):
        keyed = isinstance(value, dict) and value and set(value) <= set(names)
        return value.get(name) if keyed else value
    return {name: {k: mine(v, name) for k, v in attrs.items() if k != "by_model"} for name in names}


def merge_attrs(by_model: dict[str, dict]) -> dict:
    """The attrs the models share (module docstring)."""
    keys = list(dict.fromkeys(k for attrs in by_model.values() for k in attrs))
    out = {}
    for key in keys:
        values = {name: attrs[key] for name, attrs in by_model.items() if key in attrs}
        vals = list(values.values())
        if key == "stopped":
            out[key] = any(bool(v) for v in vals)
        elif key == "overflowed" and all(isinstance(v, (int, np.integer)) for v in vals):
            out[key] = int(sum(vals))
        elif all(isinstance(v, dict) for v in vals):
            merged = {}
            for v in vals:
                merged.update(v)
            out[key] = merged
        elif len(vals) == len(by_model) and all(_equal(vals[0], v) for v in vals[1:]):
            out[key] = vals[0]
        else:
            out[key] = values
    return out


def _equal(a, b) -> bool:
    try:
        same = a == b
        if isinstance(same, np.ndarray):
            return bool(same.all()) and np.shape(a) == np.shape(b)
        return bool(same)
    except Exception:
        return False


def _signature(fn) -> inspect.Signature:
    """fn's signature with the convention's keywords (model, dtype, device, progress, stop)."""
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.name not in CONVENTION]
    kw = inspect.Parameter.KEYWORD_ONLY
    added = [inspect.Parameter("model", kw)] + [inspect.Parameter(n, kw, default=None)
                                               for n in ("dtype", "device", "progress", "stop")]
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    rest = [p for p in params if p not in positional and p.kind != p.VAR_KEYWORD]
    varkw = [p for p in params if p.kind == p.VAR_KEYWORD]
    return sig.replace(parameters=positional + added + rest + varkw)
