"""The hook-point registry: one name per activation, the same names in every tool of the package.

Mamba's points are `HookPoint` modules of our own tree (`mamba.py`); GPT-2 keeps transformers'
module tree and its points are read off module inputs/outputs, which is all nnsight needs.

GPT-2 points, per layer `transformer.h[l]`:
    resid_pre  block input                        [b, l, d]
    q, k, v    slices of c_attn's output          [b, l, d]   (heads concatenated)
    pattern    attention probabilities            [b, heads, l, l]   (eager attention)
    attn_out   attention output after c_proj      [b, l, d]
    resid_mid  resid_pre + attn_out (ln_2 input)  [b, l, d]
    mlp_out    MLP output                         [b, l, d]
    resid_post block output                       [b, l, d]
and model-level embed (token + position embedding), final_norm (ln_f output), logits.
"""
from __future__ import annotations

from .mamba import LAYER_POINTS as MAMBA_LAYER_POINTS, MODEL_POINTS

GPT2_LAYER_POINTS = ("resid_pre", "q", "k", "v", "pattern", "attn_out", "resid_mid", "mlp_out", "resid_post")
LAYER_POINTS = {"mamba": MAMBA_LAYER_POINTS, "gpt2": GPT2_LAYER_POINTS}
MAMBA_MIXER_POINTS = ("gate", "x", "delta", "B", "C", "A_bar", "B_bar", "write", "h", "h_readout", "y")


def names(family: str) -> tuple[str, ...]:
    return LAYER_POINTS[family] + MODEL_POINTS


def n_layers(handle) -> int:
    m = handle.module
    return len(m.layers) if handle.family == "mamba" else len(m.transformer.h)


def check(handle, component: str, layer: int | None) -> None:
    """Raise a ValueError naming the valid components / layers for this model."""
    if component in MODEL_POINTS:
        if layer is not None:
            raise ValueError(f"{handle.name}: '{component}' is a model-level point; pass layer=None")
        return
    if component not in LAYER_POINTS[handle.family]:
        raise ValueError(f"{handle.name}: unknown component {component!r}; valid: "
                         f"{', '.join(names(handle.family))}")
    if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < handle.n_layers:
        raise ValueError(f"{handle.name}: layer must be an int in 0..{handle.n_layers - 1} for "
                         f"'{component}', got {layer!r}")


def get(handle, component: str, layer: int | None = None):
    """The live value of a point inside a trace on ``handle.nn``; in-place edits intervene."""
    check(handle, component, layer)
    return (_mamba if handle.family == "mamba" else _gpt2)(handle.nn, component, layer)


def mamba_hook(root, component: str, layer: int | None):
    """The HookPoint of a Mamba component under `root`: the module tree or its nnsight envoy."""
    if layer is None:
        return getattr(root, f"hook_{component}")
    block = root.layers[layer]
    owner = block.mixer if component in MAMBA_MIXER_POINTS else block
    return getattr(owner, f"hook_{component}")


def qkv_slice(qkv, component: str):
    """q, k or v out of c_attn's concatenated [..., 3·d] output (a view: edits write through)."""
    d = qkv.shape[-1] // 3
    i = "qkv".index(component)
    return qkv[..., i * d:(i + 1) * d]


def _mamba(nn, component, layer):
    return mamba_hook(nn, component, layer).output


def _gpt2(nn, component, layer):
    if layer is None:
        return {"embed": lambda: nn.transformer.drop.output,
                "final_norm": lambda: nn.transformer.ln_f.output,
                "logits": lambda: nn.lm_head.output}[component]()
    block = nn.transformer.h[layer]
    if component in ("q", "k", "v"):
        return qkv_slice(block.attn.c_attn.output, component)
    return {"resid_pre": lambda: block.input,
            "pattern": lambda: block.attn.output[1],
            "attn_out": lambda: block.attn.output[0],
            "resid_mid": lambda: block.ln_2.input,
            "mlp_out": lambda: block.mlp.output,
            "resid_post": lambda: block.output}[component]()
