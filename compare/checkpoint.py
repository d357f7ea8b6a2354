"""What a checkpoint directory must satisfy before a model is built from it.

Bad files must fail loudly, naming the file and what is wrong, never as a raw parser error
or, worse, as a model that runs and means nothing:
    config.json        UTF-8 JSON object; every size a positive int (bools and floats refused)
    memory             the parameters the config describes must fit in available memory,
                       checked before anything is allocated (`*_parameter_count`)
    weights file       readable; pickles only under torch's weights_only=True; tensors
                       floating-point and finite; not all zero, nor an all-zero embedding

Parameter counts per format, with d the residual width, L layers, V embedding rows:
    GPT-2   V·d + P·d + L·(4d² + 2·d·f + f + 9d) + 2d          P positions, f = n_inner or 4d
            (attention 4d² + 4d, MLP 2·d·f + f + d, ln_1 + ln_2 4d; final LayerNorm 2d)
    Mamba   V·d + L·(d + mixer) + d, the mixer being in_proj 2·d·d_in, conv1d d_in·k + d_in,
            x_proj d_in·(r + 2n), dt_proj r·d_in + d_in, A_log d_in·n, D d_in, out_proj d_in·d
            (n state size, r dt_rank, k conv kernel; plus biases where the config asks)
Each parameter is built in fp32 before any cast, so the model needs at least 4 bytes per
parameter; a config that cannot fit even that is refused before the first allocation.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch

from . import memory
from .mamba import MambaConfig

FP32_BYTES = 4
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
EMBEDDING_KEYS = ("wte.weight", "embeddings.weight", "embedding.weight")  # GPT-2, Mamba -hf, mamba_ssm
MAX_NAMED = 5  # tensors named in one message
_REQUIRED = object()


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be found or understood; the message says what to do."""


# --- config.json ---------------------------------------------------------------------------

def read_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{directory}: no config.json; expected a transformers GPT-2 or Mamba "
                             "directory, or an original mamba_ssm checkpoint")
    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ModelLoadError(f"{path}: not UTF-8 text (byte {err.start}); config.json must be a "
                             "UTF-8 JSON object") from None
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column "
                             f"{err.colno}); the file may be truncated or hand-edited") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path}: must hold a JSON object {{...}} of settings, got a JSON "
                             f"{type(config).__name__}")
    return config


def size(config: dict, key: str, where, default=_REQUIRED) -> int:
    """config[key] (or default when absent), which must be a positive int; `where` names the file."""
    if key not in config:
        if default is _REQUIRED:
            raise ModelLoadError(f"{where}: missing key {key!r} (a positive integer)")
        return default
    value = config[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ModelLoadError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value


def flag(config: dict, key: str, where, default: bool) -> bool:
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise ModelLoadError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def gpt2_sizes(config: dict, directory: Path) -> dict[str, int]:
    """The shape-setting keys of a transformers GPT-2 config, checked; n_inner None means 4·n_embd."""
    where = directory / "config.json"
    sizes = {key: size(config, key, where) for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")}
    inner = config.get("n_inner")
    sizes["n_inner"] = 4 * sizes["n_embd"] if inner is None else size(config, "n_inner", where)
    if sizes["n_embd"] % sizes["n_head"]:
        raise ModelLoadError(f"{where}: n_embd ({sizes['n_embd']}) must be a multiple of n_head ({sizes['n_head']})")
    sizes["untied_head"] = not flag(config, "tie_word_embeddings", where, True)
    return sizes


def mamba_config(config: dict, directory: Path) -> MambaConfig:
    """Our `MambaConfig` from a transformers Mamba (*-hf) or an original mamba_ssm config.json."""
    where = directory / "config.json"
    if config.get("model_type") == "mamba":
        if config.get("hidden_act", "silu") != "silu":
            raise ModelLoadError(f"{where}: hidden_act {config['hidden_act']!r} is not supported (only silu)")
        eps = config.get("layer_norm_epsilon", 1e-5)
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 < eps < 1:
            raise ModelLoadError(f"{where}: layer_norm_epsilon must be a number in (0, 1), got {eps!r}")
        return MambaConfig(d_model=size(config, "hidden_size", where),
                           n_layer=size(config, "num_hidden_layers", where),
                           vocab_size=size(config, "vocab_size", where),
                           d_state=size(config, "state_size", where, 16),
                           d_conv=size(config, "conv_kernel", where, 4),
                           expand=size(config, "expand", where, 2),
                           dt_rank=_dt_rank(config, "time_step_rank", where),
                           conv_bias=flag(config, "use_conv_bias", where, True),
                           bias=flag(config, "use_bias", where, False), norm_eps=eps)
    ssm = config.get("ssm_cfg") or {}
    if not isinstance(ssm, dict):
        raise ModelLoadError(f"{where}: ssm_cfg must be an object, got {ssm!r}")
    if ssm.get("layer", "Mamba1") != "Mamba1" or not flag(config, "rms_norm", where, True):
        raise ModelLoadError(f"{directory}: only Mamba-1 checkpoints with RMSNorm are supported")
    multiple = size(config, "pad_vocab_size_multiple", where, 1)
    rows = -(-size(config, "vocab_size", where) // multiple) * multiple
    nested = f"{where} ssm_cfg"
    return MambaConfig(d_model=size(config, "d_model", where), n_layer=size(config, "n_layer", where),
                       vocab_size=rows, d_state=size(ssm, "d_state", nested, 16), d_conv=size(ssm, "d_conv", nested, 4),
                       expand=size(ssm, "expand", nested, 2), dt_rank=_dt_rank(ssm, "dt_rank", nested),
                       conv_bias=flag(ssm, "conv_bias", nested, True), bias=flag(ssm, "bias", nested, False))


def _dt_rank(config: dict, key: str, where) -> int | None:
    return None if config.get(key, "auto") == "auto" else size(config, key, where)


# --- memory ----------------------------------------------------------------------------------

def gpt2_parameter_count(s: dict[str, int]) -> int:
    """Parameters of GPT2LMHeadModel for `gpt2_sizes` s (the LM head tied unless untied_head)."""
    d, f, V = s["n_embd"], s["n_inner"], s["vocab_size"]
    block = (4 * d * d + 4 * d) + (2 * d * f + f + d) + 4 * d  # attention, MLP, ln_1 + ln_2
    return V * d + s["n_positions"] * d + s["n_layer"] * block + 2 * d + (V * d if s["untied_head"] else 0)


def mamba_parameter_count(cfg: MambaConfig) -> int:
    """Parameters of our `MambaLM` for cfg (the LM head is tied to the embedding)."""
    d, d_in, n, r, k = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv
    mixer = (d * 2 * d_in + (2 * d_in if cfg.bias else 0)  # in_proj
             + d_in * k + (d_in if cfg.conv_bias else 0)  # conv1d
             + d_in * (r + 2 * n)  # x_proj
             + r * d_in + d_in  # dt_proj
             + d_in * n + d_in  # A_log, D
             + d_in * d + (d if cfg.bias else 0))  # out_proj
    return cfg.vocab_size * d + cfg.n_layer * (d + mixer) + d


def check_memory(n_params: int, directory: Path) -> None:
    """Refuse a model whose fp32 parameters alone exceed the memory available now."""
    need, free = n_params * FP32_BYTES, memory.available_bytes()
    if free is not None and need > free:
        raise ModelLoadError(f"{directory / 'config.json'} describes {n_params:,} parameters: about "
                             f"{memory.size_text(need)} in fp32 ({FP32_BYTES} bytes each), more than the "
                             f"{memory.size_text(free)} of memory available (MemAvailable); is a size in "
                             "config.json wrong?")


# --- weights ---------------------------------------------------------------------------------

def read_weights(directory: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """The weights file (model.safetensors, else pytorch_model.bin) and its state dict, checked
    by `check_weights`."""
    path = next((directory / f for f in WEIGHT_FILES if (directory / f).is_file()), None)
    if path is None:
        raise ModelLoadError(f"{directory}: no weights ({' or '.join(WEIGHT_FILES)})")
    state = _safetensors(path) if path.suffix == ".safetensors" else _pickle(path)
    check_weights(state, path)
    return path, state


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except SafetensorError as err:
        raise ModelLoadError(f"{path}: not a readable safetensors file ({err}); it may be empty or "
                             "truncated: download it again") from None


def _pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        unsafe = _unsafe_globals(path)
        if unsafe:
            # torch's own message suggests weights_only=False, i.e. running the file's code: we do not
            raise ModelLoadError(f"{path}: unsafe pickle refused: it calls Python objects beyond tensors "
                                 f"({', '.join(unsafe[:MAX_NAMED])}); use a model.safetensors of this "
                                 "checkpoint instead") from None
        raise ModelLoadError(f"{path}: not a readable PyTorch checkpoint; it may be truncated") from None
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        raise ModelLoadError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}); it may "
                             "be empty or truncated: download it again") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path}: must hold a state dict (names → tensors), got {type(state).__name__}")
    return state


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (RuntimeError, ValueError, OSError, EOFError, pickle.UnpicklingError):
        return []


def check_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse integer tensors, NaN/Inf, and weights that are all zero (or whose embedding is)."""
    integer = [f"{k} ({t.dtype})" for k, t in state.items() if not t.is_floating_point()]
    if integer:
        raise ModelLoadError(f"{path}: tensors {first_names(integer)} are not floating-point; weights must "
                             "be float32, float16 or bfloat16")
    non_finite = [k for k, t in state.items() if not torch.isfinite(t).all()]
    if non_finite:
        raise ModelLoadError(f"{path}: tensors {first_names(non_finite)} hold NaN or Inf values; the "
                             "checkpoint is corrupt (or was saved after training diverged)")
    if not any(t.any() for t in state.values()):
        raise ModelLoadError(f"{path}: every weight is zero; this is an empty or uninitialised checkpoint")
    zero = [k for k, t in state.items() if k.endswith(EMBEDDING_KEYS) and not t.any()]
    if zero:
        raise ModelLoadError(f"{path}: the embedding {zero[0]} is all zero; every token would look the same")


def first_names(names: list[str]) -> str:
    more = f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else ""
    return ", ".join(names[:MAX_NAMED]) + more
