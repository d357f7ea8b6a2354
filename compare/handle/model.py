"""`Model`: one loaded model behind one interface, whichever architecture it is.

A handle carries the torch module, its nnsight wrapper (`nn`, for hand-written traces), the
tokenizer and the few facts the rest of the package needs (family, layers, real vocabulary);
everything architecture-specific is asked of its adapter, `arch` (`families`).
Token IDs are validated here, at the boundary, so errors name the model and the allowed range;
logits that are not finite raise `NonFiniteError` instead of reading as a prediction of token 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .. import families
from ..base import memory
from ..ssm import native
from . import points
from .isolation import LockedNNsight, ModelLock
from .vocabularies import check_encodable, token_texts

FP32_BYTES = 4
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class NonFiniteError(ValueError):
    """The model produced NaN or infinite logits; the message says where they first appear."""


@dataclass(eq=False)
class Model:
    name: str
    family: str  # a key of `families.FAMILIES`: "mamba", "gpt2", "pythia"
    module: nn.Module
    tokenizer: Any
    vocab_size: int  # the tokenizer's real vocabulary; embedding rows beyond it are padding
    max_positions: int | None  # None: no positional limit (Mamba)
    nn: LockedNNsight = field(init=False, repr=False)
    lock: ModelLock = field(init=False, repr=False)  # held by every forward and trace (`isolation`)

    def __post_init__(self):
        self.module.eval()
        self.lock = ModelLock()
        self.nn = LockedNNsight(self.module, self.lock)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the weights and matmuls (`cast_module`); logits are returned in fp32."""
        return next(self.module.parameters()).dtype

    @property
    def arch(self) -> families.Family:
        """The family's adapter: its point registry and its forward, piece by piece."""
        return families.get(self.family)

    @property
    def n_layers(self) -> int:
        return self.arch.n_layers(self.module)

    @property
    def layer_kinds(self) -> tuple[str, ...]:
        """The kind of each layer ("attention", "ssm", "attention+ssm"; `Family.layer_kinds`): the
        `kind` column of a frame with a row per layer."""
        return self.arch.layer_kinds(self.module)

    def layer_kind(self, layer: int) -> str:
        return self.layer_kinds[layer]

    @property
    def hook_points(self) -> tuple[str, ...]:
        """Names accepted by `point`: per-layer components, then model-level ones."""
        return self.arch.names

    def point(self, component: str, layer: int | None = None):
        """Inside ``with handle.nn.trace(ids):`` — the live tensor of a hook point; edit it in place."""
        return points.get(self, component, layer)

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str) or not text:
            raise ValueError(f"{self.name}: prompt must be a non-empty string, got {text!r}")
        check_encodable(text, "prompt")
        return self.tokenizer.encode(text, add_special_tokens=False)

    def single_token(self, text: str, *, what: str = "token") -> int:
        """The ID of `text`, which must be exactly one token of this model (e.g. " Mary"), not one its
        tokenizer reads as its unknown token (a word-level vocabulary's <unk>)."""
        check_encodable(text, what)
        pieces = self.tokenizer.encode(text, add_special_tokens=False) if text else []
        if len(pieces) != 1:
            raise ValueError(f"{what}: {text!r} is {len(pieces)} tokens in {self.name}'s tokenizer "
                             f"({self.decode_tokens(pieces)}); it must be exactly one token in every "
                             "model (mind the leading space), or pass a token ID")
        unknown = self.tokenizer.unk_token_id
        if unknown is not None and pieces[0] == unknown and text != self.tokenizer.unk_token:
            raise ValueError(f"{what}: {text!r} is not in {self.name}'s vocabulary: its tokenizer reads it as the "
                             f"unknown token {self.tokenizer.unk_token!r} (ID {unknown}); pass a one-token string of "
                             "the vocabulary or a token ID")
        return pieces[0]

    def decode_tokens(self, ids: Sequence[int]) -> list[str]:
        """The text of each ID on its own (`vocabularies.token_texts`)."""
        return token_texts(self.tokenizer, ids)

    def as_input(self, input_ids) -> torch.Tensor:
        """A [batch, T] LongTensor on the model's device, after checking IDs and length.

        input_ids: [T] or [batch, T] of integers (`integer_ids`): floats are refused even when
        whole, bools too, and every ID must lie in 0..vocab_size-1 (checked before any cast,
        so 2**64 - 1 is refused as out of range rather than wrapped).
        """
        values = integer_ids(input_ids, f"{self.name}: token IDs")
        outside = sorted({v for v in _flat(values) if not 0 <= v < self.vocab_size})
        if outside:
            raise ValueError(f"{self.name}: token IDs {outside[:10]} are outside the vocabulary; "
                             f"allowed 0..{self.vocab_size - 1}")
        try:
            ids = torch.tensor(values, dtype=torch.long)
        except ValueError:  # ragged rows
            raise ValueError(f"{self.name}: token IDs must be [T] or [batch, T] with rows of equal "
                             "length") from None
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        if ids.dim() != 2:
            raise ValueError(f"{self.name}: token IDs must be [T] or [batch, T], got shape {tuple(ids.shape)}")
        if ids.numel() == 0:
            raise ValueError(f"{self.name}: empty input: at least one token is needed")
        if self.max_positions is not None and ids.shape[1] > self.max_positions:
            raise ValueError(f"{self.name}: {ids.shape[1]} tokens exceed the model's context of "
                             f"{self.max_positions} positions")
        return ids.to(self.device)

    def layer_bytes(self, T: int, *, ssm: bool = False) -> int:
        """Rough peak bytes of one batch item through one layer (its largest live activations).

        ssm: Mamba's SSM tensors [T, d_in, n] are materialised (something reads or edits them).
        """
        return self.arch.layer_bytes(self.module.config, T, ssm=ssm)

    def forward_bytes(self, batch: int, T: int) -> int:
        """Rough peak bytes of a plain forward: one layer's activations and the logits over every row."""
        return batch * (self.layer_bytes(T) + FP32_BYTES * T * self.module.lm_head.out_features)

    @torch.no_grad()
    def logits(self, input_ids, *, padded: bool = False) -> torch.Tensor:
        """Plain forward (no hooks): float logits [batch, T, vocab_size] over the real vocabulary.

        padded: every row of the LM head instead, [batch, T, lm_head.out_features], the padding
        rows past the tokenizer's vocabulary included (the thesis's K averages over them).

        Raises NonFiniteError where a logit is NaN or infinite, naming the first such position
        and the first stage (embedding, layer, final norm, LM head) whose output is not finite.
        A forward that would not fit in memory is refused before it starts, with the estimate.
        """
        ids = self.as_input(input_ids)
        b, T = ids.shape
        memory.check_fits(self.forward_bytes(b, T), f"a forward of {b} × {T:,} tokens through {self.name}",
                          "shorten the prompt or use a smaller batch")
        with self.lock:
            out = self.module(ids)
            out = out if isinstance(out, torch.Tensor) else out.logits
            out = out[..., : None if padded else self.vocab_size].float()
            # one pass for both extremes instead of a [b, T, V] mask (50 MiB at T = 1024); NaN propagates
            low, high = torch.aminmax(out)
            if not (torch.isfinite(low) and torch.isfinite(high)):
                raise self._non_finite(ids, out)
        return out

    def _non_finite(self, ids: torch.Tensor, logits: torch.Tensor) -> NonFiniteError:
        row, position = (~torch.isfinite(logits).all(-1)).nonzero()[0].tolist()
        stage = next((name for name, value in self._stages(ids) if not torch.isfinite(value).all()),
                     "no stage when run block by block (the fused forward overflowed)")
        token = self.decode_tokens([ids[row, position].item()])[0]
        return NonFiniteError(
            f"{self.name}: the logits are NaN or infinite, first at position {position} (token {token!r}) "
            f"of batch row {row}; the first non-finite value appears in {stage}. The weights are corrupt "
            f"or the activations overflow {self.dtype} (try dtype='float32')")

    def _stages(self, ids: torch.Tensor):
        """(stage, output) of the forward re-run stage by stage: the embedding, each layer, the
        final norm, the LM head. Called only once logits were found non-finite, so the plain
        forward pays nothing; no hook is registered, so other callers of the module see nothing."""
        return self.arch.stages(self.module, ids)


def parse_dtype(dtype) -> torch.dtype:
    """A dtype argument (a name of `DTYPES`, the torch dtype, or None for float32) as a torch dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")


def cast_module(module: nn.Module, dtype, *, stacklevel: int = 2) -> nn.Module:
    """The module with its weights in `dtype` (a `DTYPES` name or torch dtype), in place.

    Mamba follows mamba_ssm (`MambaLM.cast_`: the matmuls and norms in dtype; the conv, the scan,
    its state and the residual stream in fp32); transformers' models (GPT-2, Pythia) have every
    weight cast, as their own `.to(dtype)` does. Either way `Model.logits` returns fp32. On a CPU
    without hardware for dtype's matmuls a warning says, once, that it will be slower than fp32
    (pointing `stacklevel` frames up, as `warnings.warn` counts).
    """
    dtype = parse_dtype(dtype)
    cast = getattr(module, "cast_", None)
    module = cast(dtype) if cast is not None else module.to(dtype=dtype)
    native.warn_if_slow(dtype, next(module.parameters()).device, stacklevel=stacklevel + 1)
    return module


def integer_ids(values, what: str = "token IDs"):
    """`values` as nested lists of exact Python ints; anything that is not an integer is refused.

    Accepted: Python ints, numpy integer scalars and arrays, torch integer tensors, and (nested)
    lists or tuples of these. Refused: bools, and floats even when whole ([1.0, 2.0]): token IDs
    are labels, and a float array of them means something upstream went wrong (a column
    upcast by a NaN, an average); convert deliberately, e.g. `.astype(int)` or `.long()`.
    Values are not range-checked here; a numpy uint64 stays exact (no wrap past 2**63).
    """
    if isinstance(values, torch.Tensor):
        if values.dtype.is_floating_point or values.dtype.is_complex or values.dtype == torch.bool:
            raise TypeError(f"{what} must be integers, got a tensor of dtype {values.dtype}; "
                            "floats are refused even when whole: convert with .long() if that is meant")
        return values.tolist()
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "iu":
            raise TypeError(f"{what} must be integers, got an array of dtype {values.dtype}; "
                            "floats are refused even when whole: convert with .astype(int) if that is meant")
        return values.tolist()
    if isinstance(values, (list, tuple)):
        return [integer_ids(v, what) for v in values]
    if isinstance(values, (int, np.integer)) and not isinstance(values, bool):
        return int(values)
    raise TypeError(f"{what} must be integers, got {values!r} ({type(values).__name__})")


def _flat(values) -> list[int]:
    return [x for v in values for x in _flat(v)] if isinstance(values, list) else [values]
