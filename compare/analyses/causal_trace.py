"""Causal tracing (Meng et al. 2022, ROME): which hidden states carry a fact about the subject.

The experiment, per model:
    clean      run the prompt; the answer is the clean run's top next token (or `answer`),
               p_clean its probability at the last position.
    corrupted  add Gaussian noise to the embeddings (the `embed` point) at the subject's token
               positions, σ = noise × the standard deviation of those clean embeddings (ROME's
               3σ); `samples` independent draws from a generator seeded by `seed`; p_corrupt is
               the answer's probability averaged over the draws.
    restored   in every corrupted draw, set the component at one (layer, position) back to its
               clean value; p_restored is averaged over the draws, and the indirect effect is
               p_restored − p_corrupt. `window` > 1 restores the layers of a window centred on
               the layer at once (ROME's window, range(max(0, l − w//2), min(L, l − (−w//2)))).

Subject: a substring of the prompt (its tokens are those whose decoded text overlaps it; the
first occurrence, whitespace ignored) or a list of token positions.

Engine (`causal_trace`): one clean forward records the component at every layer; one forward of
the `samples` noised copies records what enters every block; for each layer the (position ×
draw) runs restart from the noised cache at the window's first block, with a torch hook writing
the clean values, run to the end, and the LM head reads the last position. `causal_trace_ref`
(in `causal_trace_ref`) is the one-trace-per-(layer, position) twin.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..base.checks import check_callbacks
from ..base.hooks import temporary_hooks
from ..handle.inputs import byte_budget, handles_of, position_list, prompt_ids, token_id
from ..engine.convention import analysis
from ..handle.model import Model
from ..engine.record import record_pass
from .signatures import CAUSAL_TRACE
from ..engine.restart import DEFAULT_MAX_BYTES, blocks_from, chunk_size, head

COLUMNS = ("model", "layer", "kind", "position", "token", "component", "p_restored", "indirect_effect")


@dataclass(frozen=True)
class Trace:
    """A validated causal trace of one model."""
    handle: Model
    ids: torch.Tensor  # [1, T]
    subject: tuple[int, ...]  # token positions noised
    answer: int
    component: str
    samples: int
    noise: float
    window: int
    seed: int

    @property
    def layers(self) -> tuple[int, ...]:
        """The layers that have the component (a hybrid's attention points: its attention layers)."""
        return self.handle.arch.layers_with(self.handle.module, self.component)

    def window_of(self, layer: int) -> tuple[int, ...]:
        L = self.handle.n_layers
        return tuple(range(max(0, layer - self.window // 2), min(L, layer - (-self.window // 2))))

    def epsilon(self, d: int) -> torch.Tensor:
        """Unit Gaussian draws [samples, |subject|, d], the same in the fast path and the reference."""
        gen = torch.Generator().manual_seed(self.seed)
        return torch.randn(self.samples, len(self.subject), d, generator=gen)


def prepare(prompt, subject, *, model, samples=10, noise=3.0, window=1, seed=0, component="resid_post",
            answer=None) -> list[Trace]:
    """Check every argument for every model before any compute."""
    CAUSAL_TRACE.check(samples=samples, window=window, seed=seed, noise=noise)  # its signature
    traces = []
    for handle in handles_of(model):
        if component not in handle.arch.patchable:
            raise ValueError(f"{handle.name}: component {component!r} cannot be restored; valid: "
                             f"{', '.join(handle.arch.patchable)}")
        ids = prompt_ids(handle, prompt)
        positions = subject_positions(handle, ids, subject)
        a = handle.logits(ids)[0, -1].argmax().item() if answer is None else token_id(handle, answer, "answer")
        traces.append(Trace(handle, ids, positions, a, component, int(samples), float(noise), int(window), int(seed)))
    return traces


def subject_positions(handle: Model, ids: torch.Tensor, subject) -> tuple[int, ...]:
    """The token positions of `subject`: a substring of the prompt, or positions."""
    T = ids.shape[1]
    if not isinstance(subject, str):
        return tuple(sorted(position_list(subject, T, "subject")))
    pieces = ["".join(p.split()) for p in handle.decode_tokens(ids[0].tolist())]
    text, wanted = "".join(pieces), "".join(subject.split())
    start = text.find(wanted) if wanted else -1
    if start < 0:
        raise ValueError(f"subject {subject!r} is not in the prompt as {handle.name} tokenizes it "
                         f"({handle.decode_tokens(ids[0].tolist())}); pass a substring or token positions")
    ends = np.cumsum([len(p) for p in pieces])
    return tuple(i for i, end in enumerate(ends) if end > start and end - len(pieces[i]) < start + len(wanted))


@analysis(native=True)
def causal_trace(prompt, subject, *, model, samples=10, noise=3.0, window=1, seed=0, component="resid_post",
                 answer=None, max_bytes: int = DEFAULT_MAX_BYTES, progress=None, stop=None) -> pd.DataFrame:
    """Layers × positions of restored `component` (module docstring); one row per (model, layer,
    position), columns `COLUMNS`. ``attrs`` hold per model the answer, p_clean, p_corrupt, the
    subject positions and σ. progress(done, total) after each layer; stop checked before each.
    model (one or a list), dtype, device, progress, stop: the calling convention (`engine.convention`)."""
    traces = prepare(prompt, subject, model=model, samples=samples, noise=noise, window=window, seed=seed,
                     component=component, answer=answer)
    max_bytes = byte_budget(max_bytes)
    check_callbacks(progress, stop)
    total, done, stopped = sum(len(t.layers) for t in traces), 0, False
    frames, attrs = [], {"answer": {}, "p_clean": {}, "p_corrupt": {}, "subject": {}, "sigma": {}}
    for trace in traces:
        src, resid, entries, p_corrupt, sigma = record(trace)
        handle = trace.handle
        p_clean = torch.softmax(handle.logits(trace.ids)[0, -1], -1)[trace.answer].item()
        attrs["answer"][handle.name] = handle.decode_tokens([trace.answer])[0]
        attrs["p_clean"][handle.name], attrs["p_corrupt"][handle.name] = p_clean, p_corrupt
        attrs["subject"][handle.name], attrs["sigma"][handle.name] = trace.subject, sigma
        tokens = handle.decode_tokens(trace.ids[0].tolist())
        for layer in trace.layers:
            if stop is not None and stop.is_set():
                stopped = True
                break
            with handle.lock:
                p = restored(trace, layer, src, resid, entries, max_bytes)
            frames.append(pd.DataFrame({"model": handle.name, "layer": layer, "kind": handle.layer_kind(layer),
                                        "position": range(len(tokens)),
                                        "token": tokens, "component": trace.component, "p_restored": p,
                                        "indirect_effect": p - p_corrupt}))
            done += 1
            if progress is not None:
                progress(done, total)
        if stopped:
            break
    df = pd.concat(frames, ignore_index=True)[list(COLUMNS)] if frames else pd.DataFrame(columns=COLUMNS)
    df.attrs.update(attrs, stopped=stopped, samples=samples, noise=noise, window=window, seed=seed)
    return df


@torch.no_grad()
def record(trace: Trace):
    """The clean component at every layer that has it ({layer: [1, T, *feature]}), the noised
    draws' residual entering every block ({layer: [samples, T, d]}), the clean run's block entries
    (mask and position arguments), p_corrupt and σ: two passes of the recorder (`engine.record`)."""
    handle = trace.handle
    L = handle.n_layers
    idx = list(trace.subject)
    with handle.lock:  # both passes (`engine.record`) in one hold of the model
        clean = record_pass(handle, trace.ids, [(trace.component, l) for l in trace.layers] + [("embed", None)],
                            entries=range(L))
        src = {l: clean.points[trace.component, l] for l in trace.layers}
        embed = clean.points["embed", None]
        sigma = trace.noise * embed[0, idx].float().std().item()
        eps = trace.epsilon(embed.shape[-1])

        def add(value):
            value[:, idx] += (sigma * eps).to(value.device, value.dtype)

        noised = record_pass(handle, trace.ids.repeat(trace.samples, 1), entries=range(L), edits=[("embed", None, add)])
    resid = {l: args[0].detach().clone() for l, (args, _) in noised.entries.items()}
    p_corrupt = torch.softmax(noised.logits, -1)[:, trace.answer].mean().item()
    return src, resid, clean.entries, p_corrupt, sigma


@torch.inference_mode()
def restored(trace: Trace, layer: int, src, resid, entries, max_bytes: int) -> np.ndarray:
    """p_restored [T] at `layer`: every (position × draw) run restarted from the noised cache at the
    window's first block, with the window's layers restored at that position."""
    handle = trace.handle
    window = trace.window_of(layer)
    start, S = window[0], trace.samples
    T = trace.ids.shape[1]
    runs = [(p, s) for p in range(T) for s in range(S)]
    size = max(1, chunk_size(handle, trace.component, T, max_bytes))
    last_only = window[-1] < handle.n_layers - 1  # else the final block carries a hook
    finals = []
    for i in range(0, len(runs), size):
        chunk = runs[i:i + size]
        positions = torch.tensor([p for p, _ in chunk])
        rows = torch.arange(len(chunk))

        def restore(value, l):
            value[rows, positions] = src[l][0, positions].to(value.device, value.dtype)

        # a window's layers that have the component
        with temporary_hooks(*[handle.arch.hook(handle.module, trace.component, l, lambda v, l=l: restore(v, l))
                               for l in window if l in src]):
            x = resid[start][[s for _, s in chunk]]
            finals.append(blocks_from(handle, start, x, entries[start], last_only=last_only)[:, -1])
    p = torch.softmax(head(handle, finals), -1)[:, trace.answer]
    return p.view(T, S).mean(1).cpu().numpy().astype(np.float64)
