"""`Model`: one loaded model behind one interface, whichever architecture it is.

A handle carries the torch module, its nnsight wrapper (`nn`, for hand-written traces), the
tokenizer and the few facts the rest of the package needs (family, layers, real vocabulary).
Token IDs are validated here, at the boundary, so errors name the model and the allowed range.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from . import points
from .isolation import LockedNNsight, ModelLock


@dataclass(eq=False)
class Model:
    name: str
    family: str  # "gpt2" or "mamba"
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
        return next(self.module.parameters()).dtype

    @property
    def n_layers(self) -> int:
        return points.n_layers(self)

    @property
    def hook_points(self) -> tuple[str, ...]:
        """Names accepted by `point`: per-layer components, then model-level ones."""
        return points.names(self.family)

    def point(self, component: str, layer: int | None = None):
        """Inside ``with handle.nn.trace(ids):`` — the live tensor of a hook point; edit it in place."""
        return points.get(self, component, layer)

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str) or not text:
            raise ValueError(f"{self.name}: prompt must be a non-empty string, got {text!r}")
        return self.tokenizer.encode(text, add_special_tokens=False)

    def single_token(self, text: str, *, what: str = "token") -> int:
        """The ID of `text`, which must be exactly one token of this model (e.g. " Mary")."""
        pieces = self.tokenizer.encode(text, add_special_tokens=False) if text else []
        if len(pieces) != 1:
            raise ValueError(f"{what}: {text!r} is {len(pieces)} tokens in {self.name}'s tokenizer "
                             f"({self.decode_tokens(pieces)}); it must be exactly one token in every "
                             "model (mind the leading space), or pass a token ID")
        return pieces[0]

    def decode_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.tokenizer.decode([i]) for i in ids]

    def as_input(self, input_ids) -> torch.Tensor:
        """A [batch, T] LongTensor on the model's device, after checking IDs and length."""
        ids = torch.as_tensor(input_ids, dtype=torch.long) if not isinstance(input_ids, torch.Tensor) else input_ids
        if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"{self.name}: token IDs must be integers, got dtype {ids.dtype}")
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        if ids.dim() != 2:
            raise ValueError(f"{self.name}: token IDs must be [T] or [batch, T], got shape {tuple(ids.shape)}")
        if ids.numel() == 0:
            raise ValueError(f"{self.name}: empty input: at least one token is needed")
        bad = (ids < 0) | (ids >= self.vocab_size)
        if bad.any():
            raise ValueError(f"{self.name}: token IDs {sorted(set(ids[bad].tolist()))[:10]} are outside "
                             f"the vocabulary; allowed 0..{self.vocab_size - 1}")
        if self.max_positions is not None and ids.shape[1] > self.max_positions:
            raise ValueError(f"{self.name}: {ids.shape[1]} tokens exceed the model's context of "
                             f"{self.max_positions} positions")
        return ids.long().to(self.device)

    @torch.no_grad()
    def logits(self, input_ids) -> torch.Tensor:
        """Plain forward (no hooks): float logits [batch, T, vocab_size] over the real vocabulary."""
        ids = self.as_input(input_ids)
        with self.lock:
            out = self.module(ids)
        out = out if isinstance(out, torch.Tensor) else out.logits
        return out[..., : self.vocab_size].float()
