"""A study's declaration, checked where it enters: prompts × models × analyses, and a seed.

The mapping form (the YAML/JSON file of `python -m compare study`, or a dict):

    prompts: ["When Mary and John went to the store, John gave a drink to", ...]
    # or, instead of prompts, a saved datasets_gen suite: {path: suites/, split: natural}
    models: [mamba-130m, ./gpt2]        # load_model sources; the first is compare's reference
    seed: 0                             # the study seed; each task's seed derives from it
    device: cpu                         # optional; default: CUDA when available
    analyses:
      - analysis: compare
        variant: aligned
        track: [" Mary"]
      - analysis: noise_sweep
        label: sweep_h                  # optional; the results folder (default: the analysis name)
        component: h                    # optional; default each model's family's (Family.default_component)
        target: " Mary"
        levels: [0.0, 0.5, 1.0]
        trials: 4

Every problem found here is a `SpecError` naming the field (``analyses[1].trials``) and the
allowed values, before any model loads. What needs a model (is the component a point of this
model, is the target one token of its tokenizer) is checked by the analysis itself, inside its
task: such a task fails with that analysis' own message and the others go on.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..analyses.signatures import STUDIED
from ..base.signature import Param
from ..handle.vocabularies import check_encodable

ANALYSES = tuple(s.analysis for s in STUDIED)
TOP_LEVEL = ("prompts", "suite", "models", "analyses", "seed", "device")
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class SpecError(ValueError):
    """A study declaration that cannot run; the message names the field and the allowed values."""


@dataclass(frozen=True)
class Analysis:
    """One analysis of the study: `name` in ANALYSES, its parameters, the folder `label` of its results."""

    name: str
    params: Mapping[str, Any]
    label: str


@dataclass(frozen=True)
class Spec:
    """A checked study. prompts: strings or `datasets_gen` suite rows (plain dicts)."""

    prompts: tuple[Any, ...]
    models: tuple[str, ...]
    analyses: tuple[Analysis, ...]
    seed: int = 0
    device: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored with the results; `from_mapping(spec.to_dict())` gives `spec` back."""
        return {"prompts": list(self.prompts), "models": list(self.models), "seed": self.seed,
                "device": self.device,
                "analyses": [{"analysis": a.name, "label": a.label, **a.params} for a in self.analyses]}

    def digest(self) -> str:
        """SHA-256 of the canonical JSON: two specs with one digest are the same study."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode()).hexdigest()


def load(path: str | Path) -> Spec:
    """Read a spec file: YAML (.yaml/.yml, needs PyYAML) or JSON (anything else)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"SPEC: cannot read {path} ({err}); give a YAML or JSON file") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise SpecError("SPEC: reading YAML needs PyYAML (pip install pyyaml); or give the spec as JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise SpecError(f"SPEC: {path} is not valid YAML: {err}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SpecError(f"SPEC: {path} is not valid JSON ({err}); YAML files must end in .yaml or .yml") from None
    return from_mapping(data)


def from_mapping(data: Mapping[str, Any]) -> Spec:
    """Check a mapping (see the module docstring) and return the `Spec`."""
    if isinstance(data, Spec):
        return data
    if not isinstance(data, Mapping):
        raise SpecError(f"spec: must be a mapping with keys {', '.join(TOP_LEVEL)}, got {type(data).__name__}")
    unknown = sorted(set(data) - set(TOP_LEVEL))
    if unknown:
        raise SpecError(f"spec: unknown field(s) {unknown}; allowed fields are {', '.join(TOP_LEVEL)}")
    prompts = _prompts(data)
    models = _models(data.get("models"))
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SpecError(f"seed: must be an integer ≥ 0, got {seed!r}")
    device = data.get("device")
    if device is not None and not isinstance(device, str):
        raise SpecError(f"device: must be a string such as 'cpu' or 'cuda', or absent, got {device!r}")
    rows = isinstance(prompts[0], Mapping)
    analyses = _analyses(data.get("analyses"), rows)
    for field, value in (("prompts", prompts), ("models", models), ("device", device),
                         ("analyses", data.get("analyses"))):
        _text(value, field)
    return Spec(prompts=prompts, models=models, analyses=analyses, seed=seed, device=device)


def _prompts(data: Mapping[str, Any]) -> tuple[Any, ...]:
    if ("prompts" in data) == ("suite" in data):
        raise SpecError("prompts: give exactly one of 'prompts' (a list of strings, or a datasets.Dataset "
                        "from datasets_gen) and 'suite' ({path: DIR, split: NAME} of a saved datasets_gen build)")
    prompts = _suite(data["suite"]) if "suite" in data else data["prompts"]
    if hasattr(prompts, "features") and hasattr(prompts, "__iter__"):  # a datasets.Dataset
        prompts = [dict(row) for row in prompts]
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, (list, tuple)):
        raise SpecError(f"prompts: must be a list of strings or suite rows, got {type(prompts).__name__}")
    if not prompts:
        raise SpecError("prompts: empty; a study needs at least one prompt")
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            if not prompt.strip():
                raise SpecError(f"prompts[{i}]: must be a non-empty string, got {prompt!r}")
        elif isinstance(prompt, Mapping):
            if not isinstance(prompt.get("text"), str):
                raise SpecError(f"prompts[{i}]: a suite row must have a 'text' string; rows come from datasets_gen.build")
        else:
            raise SpecError(f"prompts[{i}]: must be a string or a datasets_gen suite row, got {type(prompt).__name__}")
    if len({type(p) is str for p in prompts}) > 1:
        raise SpecError("prompts: mix strings and suite rows in separate studies")
    return tuple(dict(p) if isinstance(p, Mapping) else p for p in prompts)


def _text(value, where: str) -> None:
    """Refuse a string holding a lone surrogate anywhere in a field, naming where (``prompts[0]``,
    ``analyses[1].target``): Python allows such a str (a command line or file name with invalid
    UTF-8), but it is not text, and the spec could not even be written into the study folder."""
    if isinstance(value, str):
        try:
            check_encodable(value, where)
        except ValueError as err:
            raise SpecError(str(err)) from None
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _text(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _text(item, f"{where}[{i}]")


def _suite(suite) -> list[dict]:
    if not isinstance(suite, Mapping) or set(suite) != {"path", "split"}:
        raise SpecError(f"suite: must be {{path: DIR, split: NAME}} naming a datasets_gen build, got {suite!r}")
    from datasets import load_from_disk

    try:
        splits = load_from_disk(str(suite["path"]))
    except (OSError, ValueError) as err:
        raise SpecError(f"suite.path: cannot load a saved datasets_gen build from {suite['path']!r} ({err})") from None
    if suite["split"] not in splits:
        raise SpecError(f"suite.split: {suite['split']!r} is not a split of {suite['path']}; "
                        f"allowed values are {', '.join(splits)}")
    return [dict(row) for row in splits[suite["split"]]]


def _models(models) -> tuple[str, ...]:
    if isinstance(models, str) or not isinstance(models, (list, tuple)) or not models:
        raise SpecError(f"models: must be a non-empty list of model sources (aliases, Hub ids, directories), got {models!r}")
    for i, source in enumerate(models):
        if not isinstance(source, str) or not source.strip():
            raise SpecError(f"models[{i}]: must be an alias, a Hub id or a directory path, got {source!r}")
    keys = [model_key(s) for s in models]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise SpecError(f"models: {twice} name more than one model; results are filed by model name, "
                        "so give each model a distinct folder name")
    return tuple(models)


def model_key(source: str) -> str:
    """The folder name of a model's results: a path's last part, or an alias/Hub id with '/' → '--'.

    Mirrors `load_model`'s naming (a directory's handle is named after the directory) without
    touching the disk, so a study resumed on another machine files its results alike.
    """
    text = source.rstrip("/\\")
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text:
        return re.split(r"[/\\]", text)[-1]
    return text.replace("/", "--")


def _analyses(analyses, rows: bool) -> tuple[Analysis, ...]:
    if isinstance(analyses, (str, Mapping)) or not isinstance(analyses, (list, tuple)) or not analyses:
        raise SpecError(f"analyses: must be a non-empty list; allowed analyses are {', '.join(ANALYSES)}, got {analyses!r}")
    out = []
    for i, entry in enumerate(analyses):
        where = f"analyses[{i}]"
        entry = {"analysis": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, Mapping) or "analysis" not in entry:
            raise SpecError(f"{where}: must be a mapping with an 'analysis' key (one of {', '.join(ANALYSES)}), got {entry!r}")
        name = entry["analysis"]
        if name not in ANALYSES:
            raise SpecError(f"{where}.analysis: unknown analysis {name!r}; allowed values are {', '.join(ANALYSES)}")
        label = entry.get("label", name)
        if not isinstance(label, str) or not LABEL.fullmatch(label) or label.startswith("_"):
            raise SpecError(f"{where}.label: must be a folder name of letters, digits, '_', '.', '-' "
                            f"(not starting with '_' or '.'), got {label!r}")
        params = {k: v for k, v in entry.items() if k not in ("analysis", "label")}
        out.append(Analysis(name=name, params=_params(name, params, rows, where), label=label))
    labels = [a.label for a in out]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise SpecError(f"analyses: label(s) {twice} used twice; give each analysis entry its own 'label'")
    return tuple(out)


# --- parameters: each analysis' signature (`analyses.signatures`), the parameters a study may set ----------

PARAMS: dict[str, dict[str, Param]] = {s.analysis: {p.name: p for p in s.study} for s in STUDIED}
# component is not required: the analyses default it from each model's family (`engine.convention`)
REQUIRED = {s.analysis: tuple(p.name for p in s.study if p.required) for s in STUDIED}
NEEDS_ROWS = {"attribution_patch": "its clean/corrupt pairs are a suite row's counterfactual columns"}


def _params(name: str, params: Mapping[str, Any], rows: bool, where: str) -> dict[str, Any]:
    allowed = PARAMS[name]
    if "seed" in params and name != "compare":
        raise SpecError(f"{where}.seed: not a parameter here; each task's seed derives from the study's "
                        "'seed' and the task (stored in the results' seed column)")
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise SpecError(f"{where}: unknown parameter(s) {unknown} for {name}; allowed: {', '.join(allowed)}")
    # suite rows carry their own target (per-model target_id_<family>)
    required = [p for p in REQUIRED[name] if not (rows and p == "target")]
    missing = [p for p in required if p not in params]
    if missing:
        raise SpecError(f"{where}: {name} needs {', '.join(missing)}")
    if name in NEEDS_ROWS and not rows:
        raise SpecError(f"{where}: {name} needs suite prompts ({{path, split}}): {NEEDS_ROWS[name]}")
    if "variant" in params and name != "compare" and not rows:
        raise SpecError(f"{where}.variant: only for suite prompts (it picks the row's <model>_<variant>_ids)")
    try:
        return {key: allowed[key].validate(value, f"{where}.{key}") for key, value in sorted(params.items())}
    except ValueError as err:  # the signature's message, which names the field
        raise SpecError(str(err)) from None
