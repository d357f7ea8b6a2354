"""The architecture adapters (`compare.families`): each registry is consistent, and every hook
point's value equals what the transformers model computes at that place, for every family."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from compare.families import FAMILIES

IDS = [[2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]
TOL = dict(atol=1e-4, rtol=1e-4)
ROOT = Path(__file__).resolve().parents[2]


def _out(value):
    return value[0] if isinstance(value, tuple) else value


def _neox_qkv(ref, layer):
    """q, k (after transformers' own rotary), v of a GPT-NeoX attention, each [b, l, d]."""
    from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb

    attn, got = ref.gpt_neox.layers[layer].attention, {}
    h1 = attn.query_key_value.register_forward_hook(lambda m, a, out: got.update(qkv=out))
    h2 = attn.register_forward_pre_hook(lambda m, a, kw: got.update(rot=kw["position_embeddings"]),
                                        with_kwargs=True)
    try:
        ref(torch.tensor(IDS))
    finally:
        h1.remove(), h2.remove()
    b, T, _ = got["qkv"].shape
    q, k, v = got["qkv"].view(b, T, -1, 3 * attn.head_size).transpose(1, 2).chunk(3, dim=-1)
    q, k = apply_rotary_pos_emb(q, k, *got["rot"])
    return {name: x.transpose(1, 2).reshape(b, T, -1) for name, x in zip("qkv", (q, k, v))}


# point -> (module of the transformers model, what of it: "in", "out", or an item of a tuple output)
REFERENCE = {
    "gpt2": lambda ref, l: {
        "resid_pre": (ref.transformer.h[l], "in"), "attn_out": (ref.transformer.h[l].attn, 0),
        "pattern": (ref.transformer.h[l].attn, 1), "z": (ref.transformer.h[l].attn.c_proj, "in"), "resid_mid": (ref.transformer.h[l].ln_2, "in"),
        "mlp_out": (ref.transformer.h[l].mlp, "out"), "resid_post": (ref.transformer.h[l], "out"),
        "embed": (ref.transformer.drop, "out"), "final_norm": (ref.transformer.ln_f, "out"),
        "logits": (ref.lm_head, "out"),
        **{p: (ref.transformer.h[l].attn.c_attn, "qkv".index(p) + 10) for p in "qkv"}},
    "mamba": lambda ref, l: {
        "resid_pre": (ref.backbone.layers[l], "in"), "norm": (ref.backbone.layers[l].norm, "out"),
        "mixer_out": (ref.backbone.layers[l].mixer, "out"), "resid_post": (ref.backbone.layers[l], "out"),
        "embed": (ref.backbone.embeddings, "out"), "final_norm": (ref.backbone.norm_f, "out"),
        "logits": (ref.lm_head, "out")},
    "mamba2": lambda ref, l: {
        "resid_pre": (ref.backbone.layers[l], "in"), "norm": (ref.backbone.layers[l].norm, "out"),
        "gated_norm": (ref.backbone.layers[l].mixer.out_proj, "in"),
        "mixer_out": (ref.backbone.layers[l].mixer, "out"), "resid_post": (ref.backbone.layers[l], "out"),
        "embed": (ref.backbone.embeddings, "out"), "final_norm": (ref.backbone.norm_f, "out"),
        "logits": (ref.lm_head, "out")},
    "pythia": lambda ref, l: {
        "resid_pre": (ref.gpt_neox.layers[l], "in"), "pattern": (ref.gpt_neox.layers[l].attention, 1),
        "z": (ref.gpt_neox.layers[l].attention.dense, "in"),
        "attn_out": (ref.gpt_neox.layers[l].attention, 0), "mlp_out": (ref.gpt_neox.layers[l].mlp, "out"),
        "resid_post": (ref.gpt_neox.layers[l], "out"), "embed": (ref.gpt_neox.emb_dropout, "out"),
        "final_norm": (ref.gpt_neox.final_layer_norm, "out"), "logits": (ref.lm_head, "out")},
}
def _cases():
    cases = [("gpt2", p) for p in FAMILIES["gpt2"].names]
    cases += [("mamba", p) for p in ("resid_pre", "norm", "mixer_out", "resid_post", "embed", "final_norm", "logits")]
    cases += [("mamba2", p) for p in ("resid_pre", "norm", "gated_norm", "mixer_out", "resid_post", "embed",
                                      "final_norm", "logits")]
    cases += [("pythia", p) for p in FAMILIES["pythia"].names]
    return cases


def _reference_value(ref, family, point, layer):
    if family == "pythia" and point in ("q", "k", "v"):
        return _neox_qkv(ref, layer)[point]
    module, what = REFERENCE[family](ref, layer or 0)[point]
    got = {}
    if what == "in":
        hook = module.register_forward_pre_hook(lambda m, args: got.update(v=args[0]))
    else:
        hook = module.register_forward_hook(lambda m, a, out: got.update(v=out))
    try:
        with torch.no_grad():
            ref(torch.tensor(IDS))
    finally:
        hook.remove()
    value = got["v"]
    if what == "out":
        return _out(value)
    if isinstance(what, int) and what >= 10:  # a third of GPT-2's fused c_attn output
        d = value.shape[-1] // 3
        return value[..., (what - 10) * d:(what - 9) * d]
    return value[what] if isinstance(what, int) else value


@pytest.mark.parametrize("family,point", _cases())
def test_each_point_equals_the_transformers_models_own_value(tiny, family, point):
    handles, refs = tiny
    handle, ref = handles[family], refs[family]
    if point == "pattern":
        ref.set_attn_implementation("eager")  # transformers' own probabilities; the logits are unchanged
    layer = 1 if handle.arch.point(point).per_layer else None
    with torch.no_grad(), handle.nn.trace(torch.tensor(IDS)):
        ours = handle.point(point, layer).save()
    with torch.no_grad():
        expected = _reference_value(ref, family, point, layer)
    torch.testing.assert_close(ours, expected, **TOL)


def test_pythia_q_and_k_are_after_rotary_and_v_is_not(tiny):
    handle, ref = tiny[0]["pythia"], tiny[1]["pythia"]
    with torch.no_grad(), handle.nn.trace(torch.tensor(IDS)):
        q = handle.point("q", 0).save()
    with torch.no_grad():
        raw = ref.gpt_neox.layers[0].attention.query_key_value(
            ref.gpt_neox.layers[0].input_layernorm(ref.gpt_neox.embed_in(torch.tensor(IDS))))
    heads, head = ref.config.num_attention_heads, ref.config.hidden_size // ref.config.num_attention_heads
    raw_q = raw.view(1, len(IDS[0]), heads, 3 * head)[..., :head].reshape(1, len(IDS[0]), -1)
    torch.testing.assert_close(q[:, 0], raw_q[:, 0], **TOL)  # position 0: rotation by angle 0
    assert not torch.allclose(q[:, 1:], raw_q[:, 1:], atol=1e-3)  # later positions are rotated


def test_pythia_has_no_resid_mid_because_its_residual_is_parallel(tiny):
    handle = tiny[0]["pythia"]
    assert "resid_mid" not in handle.hook_points
    with torch.no_grad(), handle.nn.trace(torch.tensor(IDS)):
        pre, attn, mlp, post = (handle.point(p, 0).save() for p in ("resid_pre", "attn_out", "mlp_out", "resid_post"))
    torch.testing.assert_close(post, pre + attn + mlp, **TOL)


def test_an_edit_of_pythias_pattern_changes_the_output(tiny):
    # unlike GPT-2's, Pythia's pattern hook point sits before the probabilities weight v
    handle = tiny[0]["pythia"]
    clean = handle.logits(IDS)
    with torch.no_grad(), handle.nn.trace(torch.tensor(IDS)):
        handle.point("pattern", 0)[:] = 0
        edited = handle.point("logits").save()
    assert not torch.allclose(edited[..., :handle.vocab_size], clean, atol=1e-3)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_registry_names_every_point_once_and_says_where_it_lives(tiny, name):
    family = FAMILIES[name]
    handle = tiny[0][name]
    names = [p.name for p in family.points]
    assert len(names) == len(set(names))
    assert {"embed", "final_norm", "logits"} <= set(names) - set(family.layer_points)
    for point in family.points:
        layer = family.layers_with(handle.module, point.name)[0] if point.per_layer else None
        assert family.locate(handle.module, point.name, layer) is not None
        assert point.io in ("input", "output")
        if point.affine:
            assert point.refused is None and point.per_layer


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_feature_shape_is_the_traced_shape_after_batch_and_position(tiny, name):
    handle = tiny[0][name]
    for component in handle.arch.noisable:
        layer = handle.arch.layers_with(handle.module, component)[0]  # a hybrid's first layer of the point's kind
        with torch.no_grad(), handle.nn.trace(torch.tensor(IDS)):
            value = handle.point(component, layer).save()
        assert tuple(value.shape[2:]) == handle.arch.feature_shape(handle.module.config, component), component


def test_no_code_outside_the_adapters_branches_on_the_model_family():
    branch = re.compile(r"family\s*(==|!=|in\s*\()|\[\s*(handle|model|h|self)\.family\s*\]")
    found = [f"{path.relative_to(ROOT)}:{i}" for folder in ("compare", "ui")
             for path in sorted((ROOT / folder).rglob("*.py")) if "families" not in path.parts
             for i, line in enumerate(path.read_text().splitlines(), 1) if branch.search(line)]
    assert found == []


@pytest.mark.slow
def test_pythia_160m_shape_with_random_weights_matches_transformers(tmp_path):
    from compare import load_model
    from conftest import build_pythia, shared_tokenizer

    neox = shared_tokenizer("gpt-neox-20b")
    ref = build_pythia(tmp_path / "p", n_layer=12, vocab=50304, with_tokenizer=False, hidden_size=768,
                       num_attention_heads=12, intermediate_size=3072, max_position_embeddings=2048)
    for p in ref.parameters():  # _jitter's scale overflows 12 real-width layers; keep trained-like magnitudes
        torch.nn.init.normal_(p, std=0.02)
    ref.save_pretrained(tmp_path / "p")
    handle = load_model(tmp_path / "p", tokenizer=neox, device="cpu")
    assert handle.vocab_size == 50277
    ids = torch.randint(0, 50277, (1, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ref(ids).logits[..., :50277]
    assert (handle.logits(ids) - expected).abs().max().item() <= 1e-4


def test_a_50304_row_embedding_is_pythias_gpt_neox_vocabulary(tmp_path):
    from compare import ModelLoadError, load_model
    from conftest import build_pythia, shared_tokenizer

    neox, gpt2 = shared_tokenizer("gpt-neox-20b"), shared_tokenizer("gpt2")
    build_pythia(tmp_path / "p", n_layer=1, vocab=50304, with_tokenizer=False)
    handle = load_model(tmp_path / "p", tokenizer=neox, device="cpu")
    assert (handle.vocab_size, handle.encode(" Mary")) == (50277, [6393])  # Mamba's IDs
    with pytest.raises(ModelLoadError, match="EleutherAI/pythia"):
        load_model(tmp_path / "p", tokenizer=gpt2, device="cpu")
