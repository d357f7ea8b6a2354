"""The base of the adapters: `Point`, `Family`, `TransformersFamily` and the helpers the families share.

The registry (`FAMILIES`, `get`, `detect`) is the package's `__init__`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from ..base import checkpoint
from ..base.checkpoint import ModelLoadError, first_names

FP32_BYTES = 4
WRITE_POINTS = ("A_bar", "write", "h_readout")  # what `remove_writes` reads of an SSM layer


@dataclass(frozen=True)
class Point:
    """One hook point of one family.

    module: the dotted path of the module under the model whose input or output it is, with
        `{l}` standing for the layer (absent: a model-level point), e.g. "layers.{l}.mixer.hook_h".
    io: "output", or "input" (the module's first positional argument).
    item: the element of a tuple output (GPT-2's attention returns (out, pattern)).
    part: "q", "k" or "v": that third of a fused [..., 3·d] output, as a view (edits write through).
    shape: in glossary letters, e.g. "[b, l, d_in, n]"; the letters after [b, l] are the
        per-position feature shape that noise and channels use.
    affine: the block's output is affine in noise added here (`restart.run_rays` restarts from it).
    into_y: noise added here changes the SSM's output y linearly, y then passes a nonlinearity
        (Mamba-2's gated RMSNorm, in Mamba-2 and the hybrids' Mamba-2 layers): `restart.run_into_y`
        computes y's change by the family's
        `noise_into_y` and finishes the block from y (`block_from_y`), never materialising the state.
    refused: why noise on this point is refused (None: it may be noised).
    ssm: a materialised [l, d_in, n] state tensor (its memory estimate is larger).
    patchable: activation patching may replace it position by position (`compare.analyses.patching`):
        its second axis is positions (not `pattern`'s heads).
    grad_at: the point whose gradient is that of an edit here, where the edit is not read as a
        replacement (Mamba's `h`: an edit enters the recurrence as an increment of `write`);
        None: the point's own gradient (`compare.analyses.attribution`).
    read_at: a point that holds this one's value in a forward that edits neither, read there at
        less cost (Mamba's `h`: its own hook copies the state and tests the copy for an edit, three
        passes over [l, d_in, n] a layer; `h_readout` is the same tensor, not copied).
    kinds: the layer kinds that have this point (`Family.layer_kinds`), e.g. ("attention",) for
        `pattern` in a hybrid; None: every layer has it (the residual points, and every point of
        a family whose layers are all of one kind).
    """
    name: str
    module: str
    shape: str
    io: str = "output"
    item: int | None = None
    part: str | None = None
    affine: bool = False
    into_y: bool = False
    refused: str | None = None
    ssm: bool = False
    patchable: bool = True
    grad_at: str | None = None
    read_at: str | None = None
    kinds: tuple[str, ...] | None = None

    @property
    def per_layer(self) -> bool:
        return "{l}" in self.module

    def on(self, kind: str) -> bool:
        """Whether a layer of `kind` ("attention", "ssm", or both joined by "+") has this point."""
        return self.kinds is None or any(k in self.kinds for k in kind.split("+"))

    @property
    def letters(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.shape.strip("[]").split(","))


def model_points(embed: str, final_norm: str, logits: str) -> tuple[Point, ...]:
    """The model-level points every family has, from the paths of the modules whose outputs they are."""
    return (Point("embed", embed, "[b, l, d]"), Point("final_norm", final_norm, "[b, l, d]"),
            Point("logits", logits, "[b, l, V]"))


class Family:
    """The adapter base: generic access to the registry; subclasses give the architecture."""

    name: str  # the key of FAMILIES, stored as `Model.family` and in results
    title: str  # for people: "GPT-2"
    points: tuple[Point, ...]  # per-layer points in forward order, then the model-level ones
    aliases: dict[str, str] = {}  # short name -> Hub id
    tokenizer: str  # Hub id of the tokenizer used when a checkpoint ships none
    blocks_path: str  # dotted path of the ModuleList of blocks
    norm_path: str  # the final norm
    rays: bool = False  # `next_on_rays`: the block after an affine injection runs on rays
    suffix: bool = False  # `block_suffix`: a block runs on positions p.. from what a recorded run left before p
    mixing: str = "attention"  # how positions exchange information: "attention" or "ssm" (knockout, hidden attention)
    lens_point: str = "resid_post"  # what `head` decodes per layer in the logit lens (`compare.analyses.lens`)
    attribution: tuple[str, ...] = ("resid_pre", "resid_post")  # attribution patching's default components
    default_component: str = "resid_post"  # what `compare.reproduce` noises (the thesis: h(t) on Mamba)

    # --- the kind of each layer ---------------------------------------------------------------

    def layer_kinds(self, module: nn.Module) -> tuple[str, ...]:
        """The kind of each layer, by how it mixes positions: "attention", "ssm", or "attention+ssm"
        for a layer running both side by side (Falcon-H1); or a kind that mixes none, named by what
        it is (Nemotron-H's "mlp" and "moe" layers). A hybrid reads it off its config; every other
        family's layers are all `mixing`."""
        return (self.mixing,) * self.n_layers(module)

    def layer_kind(self, module: nn.Module, layer: int) -> str:
        return self.layer_kinds(module)[layer]

    def mixes(self, module: nn.Module, layer: int, kind: str) -> bool:
        """Whether layer `layer` mixes positions by `kind` ("attention" or "ssm"; Falcon-H1's by both,
        Nemotron-H's MLP and MoE layers by neither)."""
        return kind in self.layer_kind(module, layer).split("+")

    def points_at(self, module: nn.Module, layer: int) -> tuple[str, ...]:
        """The per-layer points layer `layer` has (those whose `Point.kinds` include its kind)."""
        kind = self.layer_kind(module, layer)
        return tuple(p.name for p in self.points if p.per_layer and p.on(kind))

    def layers_with(self, module: nn.Module, name: str) -> tuple[int, ...]:
        """The layers that have point `name`."""
        return tuple(l for l in range(self.n_layers(module)) if name in self.points_at(module, l))

    # --- what an analysis does to a layer, by its kind -------------------------------------------

    def knockout_hooks(self, module: nn.Module, layer: int, sources: tuple[int, ...], target: int) -> list:
        """Torch hooks (removable handles) that block the flow sources → target in layer `layer`
        (`compare.analyses.knockout`): an attention layer masks the edges target → s before the
        softmax (`mask_edges`), an SSM layer removes the sources' writes from the state the
        target reads out (`remove_writes`), a layer with both (Falcon-H1) does both."""
        hooks = []
        if self.mixes(module, layer, "ssm"):
            hooks += remove_writes(self, module, layer, sources, target)
        if self.mixes(module, layer, "attention"):
            hooks.append(mask_edges(self, module, layer, sources, target))
        return hooks

    def knockout_renormalises(self, module: nn.Module, layer: int) -> bool:
        """Whether a knockout in `layer` renormalises the target's row over the edges left open
        (attention's softmax), so that at least one must stay open."""
        return self.mixes(module, layer, "attention")

    def knockout_refusal(self, module: nn.Module, layer: int) -> str | None:
        """Why no flow can be knocked out of `layer` (None: it can)."""
        missing = [p for p in WRITE_POINTS if p not in self.points_at(module, layer)]
        if self.mixes(module, layer, "ssm") and missing:
            return (f"removing the sources' writes from its state needs the points {', '.join(WRITE_POINTS)}, which "
                    f"{self.title}'s state-space mixer does not materialise (it lacks {', '.join(missing)})")
        return None

    def hidden_attention_refusal(self, module: nn.Module, layer: int) -> str | None:
        """Why the hidden attention α of `layer` cannot be read (None: it can, from `attention_points`)."""
        if why := self.mixes_nothing(module, layer):
            return why
        if not self.mixes(module, layer, "ssm"):
            return (f"hidden attention needs a selective SSM; {self.title} mixes positions by attention at layer "
                    f"{layer}: read its heads with head_pattern")
        missing = [p for p in self.attention_points if p not in self.points_at(module, layer)]
        if missing or not self.attention_points:
            return (f"layer {layer} is an {self.layer_kind(module, layer)} layer, but {self.title} lacks the points "
                    f"hidden attention reads there ({', '.join(missing) or 'none declared'})")
        return None

    def mixes_nothing(self, module: nn.Module, layer: int) -> str | None:
        """Why `layer` has neither map: it mixes no positions (Nemotron-H's MLP and MoE layers); None where it mixes."""
        mixing = [l for l in range(self.n_layers(module))
                  if self.mixes(module, l, "ssm") or self.mixes(module, l, "attention")]
        if layer in mixing:
            return None
        return (f"layer {layer} is an {self.layer_kind(module, layer)} layer, which mixes no positions: it has no "
                f"attention pattern and no hidden attention; the layers that mix positions are {mixing}")

    def pattern_refusal(self, module: nn.Module, layer: int) -> str | None:
        """Why `layer` has no attention pattern to show (None: it has, the `pattern` point); a layer
        that attends shows its heads, Falcon-H1's too, which run an SSM beside them."""
        if why := self.mixes_nothing(module, layer):
            return why
        if "pattern" not in self.points_at(module, layer):
            return f"layer {layer} of {self.title} has no attention pattern; use hidden_attention for a selective SSM"
        return None

    # --- the registry ---------------------------------------------------------------------

    def point(self, name: str) -> Point:
        return next(p for p in self.points if p.name == name)

    def find(self, name) -> Point | None:
        """The point called `name`, or None (any value: user input is checked with this)."""
        return next((p for p in self.points if p.name == name), None)

    @property
    def layer_points(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.points if p.per_layer)

    @property
    def names(self) -> tuple[str, ...]:
        """Per-layer points, then model-level ones."""
        return self.layer_points + tuple(p.name for p in self.points if not p.per_layer)

    @property
    def noisable(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.points if p.per_layer and p.refused is None)

    @property
    def role(self) -> str:
        """Which of the thesis's two roles the architecture fits: "ssm" (Mamba's: positions mixed by a
        state-space scan) or "transformer" (GPT-2's: by attention)."""
        return "ssm" if self.mixing == "ssm" else "transformer"

    @property
    def patchable(self) -> tuple[str, ...]:
        """Per-layer points activation patching may replace at chosen positions (`Point.patchable`)."""
        return tuple(p.name for p in self.points if p.per_layer and p.patchable)

    def feature_shape(self, config, name: str) -> tuple[int, ...]:
        """The per-position shape of a point: its letters after [b, l], sized by `dims`."""
        dims = self.dims(config)
        return tuple(dims[letter] for letter in self.point(name).letters[2:])

    # --- where a point lives ------------------------------------------------------------------

    def locate(self, root, name: str, layer: int | None):
        """The module (or, under nnsight, its envoy) that holds the point under `root`."""
        for part in self.point(name).module.format(l=layer).split("."):
            root = root[int(part)] if part.isdigit() else getattr(root, part)
        return root

    def trace_value(self, root, name: str, layer: int | None):
        """The live value of a point inside an nnsight trace on `root` (`Model.nn`)."""
        p = self.point(name)
        envoy = self.locate(root, name, layer)
        value = envoy.input if p.io == "input" else envoy.output
        if p.item is not None:
            value = value[p.item]
        return thirds(value, p.part) if p.part else value

    def hook(self, module: nn.Module, name: str, layer: int, add):
        """A torch hook calling add(value) on the point, which edits it in place, as
        ``point(...)[:, pos] += noise`` does in a trace. Returns the removable handle."""
        p = self.point(name)
        target = self.locate(module, name, layer)
        if p.io == "input":
            return target.register_forward_pre_hook(lambda mod, args: add(args[0]))

        def on_output(mod, args, out):
            value = out[p.item if p.item is not None else 0] if isinstance(out, tuple) else out
            add(thirds(value, p.part) if p.part else value)
        return target.register_forward_hook(on_output)

    # --- the forward, piece by piece ------------------------------------------------------------

    def blocks(self, module: nn.Module) -> nn.ModuleList:
        return _walk(module, self.blocks_path)

    def n_layers(self, module: nn.Module) -> int:
        return len(self.blocks(module))

    def final_norm(self, module: nn.Module) -> nn.Module:
        return _walk(module, self.norm_path)

    def head(self, module: nn.Module, resid: torch.Tensor, columns: list[int] | None = None) -> torch.Tensor:
        """Logits from residuals [..., d]: the final norm, then the LM head; with `columns` (token
        IDs) only theirs [..., len(columns)], from the same rows of the head's weight (at a short
        prompt the LM head is a forward's largest matmul, and a metric of one or two logits reads
        only these: `analyses.patching`, `analyses.attribution`)."""
        normed = self.final_norm(module)(resid)
        if columns is None:
            return module.lm_head(normed)
        head = module.lm_head
        return nn.functional.linear(normed, head.weight[columns], None if head.bias is None else head.bias[columns])

    def blocks_from(self, module: nn.Module, start: int, resid: torch.Tensor, entry, stop: int | None = None,
                    last_only: bool = False) -> torch.Tensor:
        """The residual [b, l, d] after blocks start..stop-1 (default: to the last block).

        entry: (args, kwargs) the model passed block `start` in the clean forward (the mask and
        position arguments are reused; args[0], the residual, is replaced by `resid`).
        last_only: the final block may compute its last position only, [b, 1, d].
        """
        raise NotImplementedError

    def record_prefix(self, module: nn.Module, layer: int, resid: torch.Tensor):
        """What block `layer` carries from each position to later ones, from one run on resid
        [1, T, d], for `block_suffix` (families with `suffix`)."""
        raise NotImplementedError(f"{self.title} has no suffix path")

    def block_suffix(self, module: nn.Module, layer: int, prefix, pieces) -> list[torch.Tensor]:
        """Block `layer`'s output at positions p.. [R, T − p, d] of each piece (p, rows [R, T − p, d]),
        from its input there, the rows' positions < p being those of the run `prefix` recorded
        (`record_prefix`); the pieces run in one call where the family can. No hook point of the
        block is called."""
        raise NotImplementedError(f"{self.title} has no suffix path")

    def next_on_rays(self, module: nn.Module, layer: int) -> bool:
        """Whether the block after `layer` runs on rays (`restart.run_rays`; Mamba's in_proj trick)."""
        return self.rays and layer + 1 < self.n_layers(module)

    def ray_projection(self, module: nn.Module, layer: int, value: torch.Tensor) -> torch.Tensor:
        """What block `layer` computes of a residual [*, T, d] that is linear in it, for
        `block_on_rays` (families with `rays`): of the clean output, then of each response."""
        raise NotImplementedError(f"{self.title} has no ray path")

    def block_on_rays(self, module: nn.Module, layer: int, inputs: torch.Tensor, level: torch.Tensor,
                      clean_proj: torch.Tensor, response_proj: torch.Tensor, last_only: bool) -> torch.Tensor:
        """Block `layer`'s output [b, T, d] (or [b, 1, d], last_only) on inputs = clean + level ·
        response, from the `ray_projection`s of clean and of the responses [b, T, ·] instead of
        one per run. The block's hook points are not called: nothing hooks a block after the
        injected one."""
        raise NotImplementedError(f"{self.title} has no ray path")

    def stages(self, module: nn.Module, ids: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        """(stage, output) of the forward re-run stage by stage — embedding, each layer, final
        norm, LM head — without registering a hook (other callers see nothing)."""
        resid, args, kwargs = self.embed(module, ids)
        yield "the embedding", resid
        blocks = self.blocks(module)
        for i, block in enumerate(blocks):
            resid = block(resid, *args, **kwargs)
            yield f"layer {i} (of {len(blocks)})", resid
        resid = self.final_norm(module)(resid)
        yield "the final norm", resid
        yield "the LM head", module.lm_head(resid)

    def ssm_parameters(self, module: nn.Module, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(A [d_in, n], D [d_in]) of a layer's selective SSM in fp32, as its scan uses them
        (families with mixing "ssm"; `compare.hidden_attention`, `compare.knockout`)."""
        raise NotImplementedError(f"{self.title} has no selective SSM")

    attention_units: str = "d_in"  # the glossary letter whose entries hidden attention's α is per (families with mixing "ssm")
    attention_points: tuple[str, ...] = ()  # the points `hidden_attention_terms` reads, in forward order

    def hidden_attention_terms(self, module: nn.Module, layer: int, seen: dict, units: torch.Tensor):
        """(α [U, T, T], x [T, U, ...], D [U], y [T, U, ...]) of a layer's SSM for the `units`
        (indices into `attention_units`), from `seen`, the `attention_points` of one forward (batch
        row 0), such that y_t = Σ_s α[:, t, s] x_s + D x_t (`compare.hidden_attention`)."""
        raise NotImplementedError(f"{self.title} has no selective SSM")

    h_wavefront: bool = False  # patching `h` may take `patching._h_wavefront` (Mamba-1's block: `y_response`, its incoming state)

    def y_response(self, module: nn.Module, layer: int, dy: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """The change of block `layer`'s output [b, l, d] for a change dy of the SSM's output y
        (families with mixing "ssm"; `patching` restarts a patch of `h` from it)."""
        raise NotImplementedError(f"{self.title} has no selective SSM")

    into_y_points: tuple[str, ...] = ()  # the clean block's points `noise_into_y` and `block_from_y` read

    def noise_into_y(self, module: nn.Module, layer: int, component: str, terms: dict, positions, values: torch.Tensor):
        """The change of block `layer`'s y [R, T, ...] when values [R, P, *feature] are added to
        `component` (a `Point.into_y`) at `positions` (P ints), from `terms`, the clean block's
        `into_y_points` [1, T, ...]."""
        raise NotImplementedError(f"{self.title} has no into_y point")

    def block_from_y(self, module: nn.Module, layer: int, terms: dict, resid: torch.Tensor, y: torch.Tensor):
        """Block `layer`'s output [R, T, d] from its input resid [1, T, d] and the SSM's output y
        [R, T, ...], the rest of the block as in `terms` (the clean block's `into_y_points`)."""
        raise NotImplementedError(f"{self.title} has no into_y point")

    def embed(self, module: nn.Module, ids: torch.Tensor):
        """(residual entering block 0, extra args, extra kwargs of every block) for `stages`."""
        raise NotImplementedError

    # --- sizes and memory -------------------------------------------------------------------------

    def dims(self, config) -> dict[str, int]:
        """The size of each glossary letter for a loaded model's config."""
        raise NotImplementedError

    def layer_bytes(self, config, T: int, *, ssm: bool = False) -> int:
        """Rough peak bytes of one batch item through one layer (its largest live activations)."""
        raise NotImplementedError

    def grad_bytes(self, config, T: int) -> int:
        """Rough bytes one layer keeps for the backward of a forward under autograd, one batch
        item (`compare.analyses.attribution`); by default its peak activations (`layer_bytes`)."""
        return self.layer_bytes(config, T)

    # --- loading ------------------------------------------------------------------------------------

    def matches(self, config: dict) -> bool:
        """Whether config.json describes a checkpoint of this family."""
        raise NotImplementedError

    def parameter_count(self, config: dict, directory: Path) -> int:
        """Parameters the config describes (checked, naming `directory`'s config.json), before loading."""
        raise NotImplementedError

    def build(self, directory: Path, config: dict) -> nn.Module:
        """The module with the checkpoint's weights; sizes and memory are checked before allocating."""
        raise NotImplementedError

    def embedding(self, module: nn.Module) -> nn.Embedding:
        return module.get_input_embeddings()

    def max_positions(self, config: dict) -> int | None:
        return None

    def ignored(self, key: str) -> bool:
        """Checkpoint entries that are not weights (buffers old exports saved) and are dropped."""
        return False


class TransformersFamily(Family):
    """A family on transformers' own module tree, built from the checked state dict."""

    model_type: str  # config.json's model_type
    classes: tuple[str, str]  # (config class, model class) in transformers
    attention = "eager"  # the attention implementation: eager returns the probabilities (`pattern`)

    def matches(self, config):
        return config.get("model_type") == self.model_type

    def build(self, directory, config):
        import transformers

        checkpoint.check_memory(self.parameter_count(config, directory), directory)
        path, state = checkpoint.read_weights(directory, ignored=self.ignored)
        config_class, model_class = (getattr(transformers, name) for name in self.classes)
        return from_state_dict(model_class, transformers_config(config_class, config, directory), state, path,
                               self.attention)


def thirds(fused: torch.Tensor, part: str) -> torch.Tensor:
    """q, k or v out of a fused [..., 3·d] projection (a view: edits write through)."""
    d = fused.shape[-1] // 3
    i = "qkv".index(part)
    return fused[..., i * d:(i + 1) * d]


def causal_mask(resid: torch.Tensor) -> torch.Tensor:
    """The mask transformers gives eager attention, [1, 1, l, l]: added to the scores, finfo.min
    above the diagonal."""
    T = resid.shape[1]
    return torch.full((1, 1, T, T), torch.finfo(resid.dtype).min, device=resid.device, dtype=resid.dtype).triu(1)


def mask_edges(arch: Family, module: nn.Module, layer: int, sources, target: int):
    """A pre-hook on the layer's attention module (the one whose output `attn_out` is) that masks
    the edges target → sources in its attention mask, as the causal mask masks later positions."""
    idx = torch.tensor(list(sources))

    def mask(attention, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        m = kwargs.get("attention_mask")
        m = causal_mask(hidden) if m is None else m.clone()  # an implementation that masks causally on its own
        if m.dtype == torch.bool:  # True: attend
            m[..., target, idx] = False
        else:
            m[..., target, idx] = torch.finfo(m.dtype).min
        return args, {**kwargs, "attention_mask": m}

    return arch.locate(module, "attn_out", layer).register_forward_pre_hook(mask, with_kwargs=True)


def remove_writes(arch: Family, module: nn.Module, layer: int, sources, target: int) -> list:
    """Hooks that read the layer's Ā and w (`WRITE_POINTS`) and subtract the sources' share,
    Σ_s (Π_{k=s+1..t} Ā_k) w_s, from h_readout at the target."""
    seen = {}

    def remove(h):
        A_bar, w = seen["A_bar"], seen["write"]  # [b, T, *state]; Ā may have fewer axes (Mamba-2: [b, T, H])
        A_bar = A_bar.reshape(A_bar.shape + (1,) * (w.dim() - A_bar.dim()))
        share = torch.zeros_like(h[:, target])
        for s in range(min(sources), target + 1):  # by the recurrence
            share = share * A_bar[:, s] + (w[:, s] if s in sources else 0)
        h[:, target] -= share

    hooks = [arch.hook(module, name, layer, lambda v, name=name: seen.__setitem__(name, v)) for name in ("A_bar", "write")]
    return hooks + [arch.hook(module, "h_readout", layer, remove)]


def from_state_dict(model_class, cfg, state: dict[str, torch.Tensor], path: Path, attn: str) -> nn.Module:
    """A transformers model from a state dict already read and checked; transformers maps its key
    names and reports what did not fit, which is refused here naming the first tensors."""
    module, info = model_class.from_pretrained(
        None, config=cfg, state_dict=state, attn_implementation=attn,
        dtype=torch.float32, output_loading_info=True, ignore_mismatched_sizes=True)
    mismatched = sorted(info["mismatched_keys"])
    if mismatched:
        key, got, expected = mismatched[0]
        raise ModelLoadError(f"{path}: the weights do not match config.json: {len(mismatched)} tensors "
                             f"have other shapes, e.g. {key} is {tuple(got)} where the config needs "
                             f"{tuple(expected)}")
    if info["missing_keys"]:
        raise ModelLoadError(f"{path}: the weights lack tensors config.json needs: "
                             f"{first_names(sorted(info['missing_keys']))}")
    return module


def transformers_config(config_class, config: dict, directory: Path):
    try:
        return config_class.from_dict(config)
    except (TypeError, ValueError) as err:
        raise ModelLoadError(f"{directory / 'config.json'}: transformers refuses this {config_class.__name__}: "
                             f"{err}") from None


def _walk(root, path: str):
    for part in path.split("."):
        root = getattr(root, part)
    return root
