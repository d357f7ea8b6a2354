"""Model sources and the process-wide model cache shared by every session of the app.

A source is anything `compare.load_model` accepts: an alias, a Hub id or a local directory.
Two configured models, "mamba" and "gpt2", are the app's default pair: they load at start-up
and the cached examples are computed with them. Precedence: `configure(...)` (the CLI flags)
over the MAMBA_MODEL / GPT2_MODEL environment variables over the defaults, so the same app runs
online against the Hub and offline against local copies. Beyond them the user may pick any
model by name (`load`): an alias (`choices`: Mamba, GPT-2 and Pythia sizes), a Hub id or a local
directory, and compare any two or three (`chosen`). Each source is loaded once per process; a
lock keeps two sessions that ask at the same time from loading it twice. Every model loads in one
dtype (`weights_dtype`: `configure(dtype=...)`, the --dtype flag, over COMPARE_DTYPE over
"float32"; "bfloat16" pays off on a GPU or a CPU with AMX / AVX512-BF16, `compare.load_model`).
"""
from __future__ import annotations

import hashlib
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from compare import ALIASES, Model, ModelLoadError
from compare.handle.loading import cached_model
from compare.handle.model import parse_dtype

MODELS = ("mamba", "gpt2")
"""The two configured models, the default pair, in display order; Mamba first, as in `compare.compare`."""

MAX_CHOSEN = 3
"""Models one comparison may hold: the first is the reference, each other is measured against it."""

DEFAULTS = {"mamba": "mamba-130m", "gpt2": "gpt2"}
ENV_VARS = {"mamba": "MAMBA_MODEL", "gpt2": "GPT2_MODEL"}
DTYPE_ENV = "COMPARE_DTYPE"

HUB = ("huggingface.co", 443)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json + merges.txt")

_configured: dict[str, str] = {}
_lock = threading.Lock()
_hub: dict[str, bool] = {}


def configure(dtype: str | None = None, **sources: str | None) -> None:
    """Set the sources of this process (`mamba=`, `gpt2=`) and the dtype every model loads in;
    None leaves a setting as it was."""
    unknown = sorted(set(sources) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown model roles {unknown}; allowed: {list(MODELS)}")
    if dtype is not None:
        parse_dtype(dtype)  # refused here, naming the allowed values, not at the first load
        _configured["dtype"] = dtype
    _configured.update({role: str(src) for role, src in sources.items() if src is not None})


def weights_dtype() -> str:
    """The dtype the app loads its models in: configured, else $COMPARE_DTYPE, else float32."""
    return _configured.get("dtype") or os.environ.get(DTYPE_ENV) or "float32"


def source(role: str) -> str:
    """Where the model of `role` comes from: configured, else its env var, else the default."""
    if role not in MODELS:
        raise ValueError(f"model must be one of {list(MODELS)}, got {role!r}")
    return _configured.get(role) or os.environ.get(ENV_VARS[role]) or DEFAULTS[role]


def key() -> str:
    """A short hash of both sources (directories as absolute paths): results computed by one pair
    of models, such as cached examples, are stored under it and never shown for another."""
    parts = []
    for role in MODELS:
        src = source(role)
        path = Path(src).expanduser()
        parts.append(f"{role}={path.resolve() if path.is_dir() else src}")
    if weights_dtype() != "float32":  # other logits; fp32 keeps the keys it always had
        parts.append(f"dtype={weights_dtype()}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def fix(role: str) -> str:
    """How to point the app at a local copy of the `role` model."""
    return (f"start the app with `python -m ui --{role} DIR` or `{ENV_VARS[role]}=DIR python -m ui`, "
            "DIR a local directory with config.json, the weights and the tokenizer")


def hub_reachable() -> bool:
    """Whether the Hugging Face Hub answers: one attempt per process (3 s at most). When it does not,
    the process goes offline (huggingface_hub's HF_HUB_OFFLINE), so a load that would fetch from
    the Hub (a folder without a tokenizer fetches its family's) reads the local cache and fails at
    once, instead of retrying for ~45 s per file."""
    if "reachable" not in _hub:
        import huggingface_hub.constants

        try:
            socket.create_connection(HUB, timeout=3).close()
            _hub["reachable"] = not huggingface_hub.constants.HF_HUB_OFFLINE
        except OSError:
            _hub["reachable"] = False
            huggingface_hub.constants.HF_HUB_OFFLINE = True
    return _hub["reachable"]


def _cached(src: str) -> Model:
    with _lock:  # the cache itself is not thread-safe: two sessions would load a model twice
        hub_reachable()
        return cached_model(src, dtype=weights_dtype())


def _without_tokenizer(src: str) -> str:
    """Advice for a local folder that holds no tokenizer (empty for any other source)."""
    path = Path(src).expanduser()
    if not path.is_dir() or any((path / f.split(" ")[0]).is_file() for f in TOKENIZER_FILES):
        return ""
    return (f" {str(path)!r} holds no tokenizer, and its family's could not be fetched from the Hub"
            f"{'' if hub_reachable() else ' (unreachable: offline)'}: add tokenizer.json (or "
            f"{' or '.join(TOKENIZER_FILES[1:])}) of the model's tokenizer to that folder.")


def get(role: str) -> Model:
    """The loaded model of `role`, loading it on first use (thread-safe, once per source)."""
    src = source(role)
    try:
        return _cached(src)
    except ModelLoadError as err:
        raise ModelLoadError(_for_the_app(role, src, err)) from err


def _for_the_app(role: str, src: str, err: Exception) -> str:
    # The loader's advice is for the Python API (load_model('DIR')); here the fix is a flag.
    reason = str(err).replace("pass the directory: load_model('DIR')", "use it as below")
    return f"{role} model {src!r} could not be loaded: {reason}{_without_tokenizer(src)} Fix: {fix(role)}."


def choices() -> list[tuple[str, str]]:
    """(label, name) of what the model pickers offer: the two configured models, then every alias;
    a Hub id or a local directory can be typed in as well."""
    return [(f"{role}: {source(role)}", role) for role in MODELS] + [(alias, alias) for alias in ALIASES]


def load(name: str) -> Model:
    """The model called `name`: a configured one ("mamba", "gpt2") or any source `load_model` takes."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"model: pick a model or type an alias, a Hub id or a local directory, got {name!r}")
    if name in MODELS:
        return get(name)
    try:
        return _cached(name.strip())
    except ModelLoadError as err:
        raise ModelLoadError(f"model {name!r} could not be loaded: {err}{_without_tokenizer(name.strip())}") from err


def kinds_note(model: Model, layers) -> str:
    """The kind of each layer of `layers` ("attention", "ssm", "attention+ssm"), for a tab's note:
    listed layer by layer where they differ (a hybrid), in one word where they do not."""
    kinds = [model.layer_kind(layer) for layer in layers]
    if len(set(kinds)) == 1:
        return f"{model.name}: every layer swept is {kinds[0]}"
    return f"{model.name} layers: " + ", ".join(f"{layer} {kind}" for layer, kind in zip(layers, kinds))


def layer_choices(model: Model, layers) -> list[tuple[str, int]]:
    """(label, layer) of a layer picker: a hybrid's labels name each layer's kind ("3 · attention"),
    as the figures' layer ticks do."""
    kinds = [model.layer_kind(layer) for layer in layers]
    if len(set(kinds)) == 1:
        return [(str(layer), layer) for layer in layers]
    return [(f"{layer} · {kind}", layer) for layer, kind in zip(layers, kinds)]


def chosen(names) -> tuple[Model, ...]:
    """The models picked for a comparison, the first the reference; none picked: the default pair."""
    names = [n for n in (names or []) if isinstance(n, str) and n.strip()]
    if not names:
        return pair()
    if not 2 <= len(names) <= MAX_CHOSEN:
        raise ValueError(f"models: pick two or three models to compare, got {len(names)} ({', '.join(names)})")
    handles = tuple(load(n) for n in names)
    loaded = [h.name for h in handles]
    if len(set(loaded)) != len(loaded):
        raise ValueError(f"models: {', '.join(names)} load models of the same name ({', '.join(loaded)}); "
                         "pick different models")
    return handles


@dataclass(frozen=True)
class Status:
    """One role's start-up check: the source and its model's name, or why it did not load."""
    role: str
    source: str
    loaded: str | None  # the model's name
    problem: str | None

    @property
    def line(self) -> str:
        if self.problem is None:
            return f"{self.role}: loaded {self.loaded!r} from {self.source}"
        return f"{self.role}: MISSING — {self.problem}"


def check() -> list[Status]:
    """Load both models now, reporting every role (a missing one does not hide the other's state)."""
    statuses = []
    for role in MODELS:
        try:
            statuses.append(Status(role, source(role), get(role).name, None))
        except ModelLoadError as err:
            statuses.append(Status(role, source(role), None, str(err)))
    return statuses


def banner(statuses: list[Status]) -> str:
    """Markdown for the top of the page: empty when both loaded, else each missing model and its fix."""
    missing = [s for s in statuses if s.problem is not None]
    if not missing:
        return ""
    return "\n".join(["**⚠ Not every model could be loaded** — the tabs that need it will refuse to run:"]
                     + [f"- {s.line}" for s in statuses])


def pair() -> tuple[Model, ...]:
    """Both models, in `MODELS` order."""
    return tuple(get(role) for role in MODELS)
