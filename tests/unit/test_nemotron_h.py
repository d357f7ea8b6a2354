"""Nemotron-H (one mixer per layer, of four kinds: Mamba-2 "M", attention "*", MLP "-", mixture of
experts "E") loaded through `load_model` from a tiny random transformers checkpoint: the logits are
transformers' own, each layer has the kind its pattern declares and the points of that kind, each
point holds what transformers computes there, and the analyses run on it unchanged — the layers
that mix no positions included."""
from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from compare import ALIASES, ModelLoadError, load_model
from compare.families import FAMILIES
from test_hybrids import (CORRUPT, IDS, PROMPT, TOL, _capture, _points, assert_patching_restores_clean_logits,
                          eager_attentions, mamba2_expected)

KINDS = ("ssm", "attention", "mlp", "moe", "ssm", "mlp")  # conftest's pattern "M*-EM-"
SSM_LAYER, ATTENTION_LAYER, MLP_LAYER, MOE_LAYER = 0, 1, 2, 3


@pytest.fixture(scope="module")
def nemotron(tiny):
    return tiny[0]["nemotron_h"], tiny[1]["nemotron_h"]


def _exact(ref, ids):
    """transformers' logits in float64 (the error of its own fp32 forward is measured against these)."""
    ref64 = copy.deepcopy(ref).double()
    ref64.set_experts_implementation("eager")  # torch's grouped matmul has no float64
    with torch.no_grad():
        return ref64(ids).logits


# --- logits and kinds ----------------------------------------------------------------------------


def test_logits_equal_transformers_within_its_own_fp32_error(nemotron):
    handle, ref = nemotron
    ids = torch.tensor(IDS)
    exact = _exact(ref, ids)[..., :handle.vocab_size]
    with torch.no_grad():
        theirs = ref(ids).logits[..., :handle.vocab_size].double()
    own_error = (theirs - exact).abs().max().item()
    assert (handle.logits(ids).double() - exact).abs().max().item() <= 2 * own_error + 1e-6


def test_layers_have_the_kinds_the_pattern_declares_and_the_points_of_their_kind(nemotron):
    handle, ref = nemotron
    assert ref.config.hybrid_override_pattern == "M*-EM-"
    assert handle.layer_kinds == KINDS
    classes = {"ssm": "NemotronHMamba2Mixer", "attention": "NemotronHAttention", "mlp": "NemotronHMLP",
               "moe": "NemotronHMoE"}
    assert [classes[k] for k in KINDS] == [type(layer.mixer).__name__ for layer in ref.model.layers]
    arch, module = handle.arch, handle.module
    assert arch.layers_with(module, "x") == (0, 4)
    assert arch.layers_with(module, "pattern") == (1,)
    assert arch.layers_with(module, "mlp_out") == (2, 5)
    assert arch.layers_with(module, "moe_out") == (3,)
    assert arch.layers_with(module, "resid_post") == tuple(range(6))
    assert arch.points_at(module, MLP_LAYER) == ("resid_pre", "norm", "mlp_out", "resid_post")


def test_an_mlp_layer_mixes_no_positions(nemotron):
    handle = nemotron[0]
    assert not handle.arch.mixes(handle.module, MLP_LAYER, "attention")
    assert not handle.arch.mixes(handle.module, MLP_LAYER, "ssm")
    with pytest.raises(ValueError, match=r"layer 2 is an mlp layer and has no 'pattern'.*\[1\]"):
        handle.point("pattern", MLP_LAYER)


# --- each kind's points against transformers ------------------------------------------------------


def test_pattern_equals_transformers_eager_attention_weights(nemotron):
    handle, ref = nemotron
    weights = eager_attentions(ref, IDS)
    assert len(weights) == 1  # one attention layer
    ours = _points(handle, {"pattern": ("pattern", ATTENTION_LAYER)})
    torch.testing.assert_close(ours["pattern"], weights[0], **TOL)


def test_q_k_v_are_the_projections_of_the_normed_residual_without_rotary(nemotron):
    handle, ref = nemotron
    attn = ref.model.layers[ATTENTION_LAYER].mixer
    got = _capture(ref, {"call": (attn, "kwargs")})
    args, kwargs = got["call"]
    hidden = kwargs.get("hidden_states", args[0] if args else None)
    with torch.no_grad():
        expected = {name: getattr(attn, f"{name}_proj")(hidden) for name in "qkv"}
    ours = _points(handle, {name: (name, ATTENTION_LAYER) for name in "qkv"})
    for name in "qkv":
        torch.testing.assert_close(ours[name], expected[name], **TOL)
    assert ours["k"].shape[-1] == handle.arch.dims(handle.module.config)["d_kv"]


def test_mamba2_points_match_in_proj_conv_and_a_naive_scan(nemotron):
    handle, ref = nemotron
    expected = mamba2_expected(ref, ref.model.layers[SSM_LAYER].mixer)
    ours = _points(handle, {name: (name, SSM_LAYER) for name in expected})
    for name, value in expected.items():
        torch.testing.assert_close(ours[name][0].double().reshape(value.shape), value, atol=1e-5, rtol=1e-4, msg=name)


def test_residual_mixer_and_model_points_equal_transformers_module_values(nemotron):
    handle, ref = nemotron
    layers = ref.model.layers
    where = {("resid_pre", MLP_LAYER): (layers[MLP_LAYER], "in"), ("norm", MLP_LAYER): (layers[MLP_LAYER].norm, "out"),
             ("resid_post", MLP_LAYER): (layers[MLP_LAYER], "out"),
             ("attn_out", ATTENTION_LAYER): (layers[ATTENTION_LAYER].mixer, "out"),
             ("z", ATTENTION_LAYER): (layers[ATTENTION_LAYER].mixer.o_proj, "in"),
             ("mlp_out", MLP_LAYER): (layers[MLP_LAYER].mixer, "out"),
             ("router_logits", MOE_LAYER): (layers[MOE_LAYER].mixer.gate, "out"),
             ("shared_out", MOE_LAYER): (layers[MOE_LAYER].mixer.shared_experts, "out"),
             ("moe_out", MOE_LAYER): (layers[MOE_LAYER].mixer, "out"),
             ("embed", None): (ref.model.embeddings, "out"), ("final_norm", None): (ref.model.norm_f, "out")}
    got = _capture(ref, {key: value for key, value in where.items()})
    ours = _points(handle, {key: key for key in where} | {("logits", None): ("logits", None)})
    for key in where:
        value = got[key]
        torch.testing.assert_close(ours[key], value[0] if isinstance(value, tuple) else value, **TOL, msg=str(key))
    torch.testing.assert_close(ours[("logits", None)], got["output"].logits, **TOL)


def test_each_layer_adds_its_mixers_output_to_the_residual(nemotron):
    handle = nemotron[0]
    outputs = {SSM_LAYER: "mixer_out", ATTENTION_LAYER: "attn_out", MLP_LAYER: "mlp_out", MOE_LAYER: "moe_out"}
    ours = _points(handle, {(name, l): (name, l) for l, out in outputs.items()
                            for name in ("resid_pre", out, "resid_post")})
    for l, out in outputs.items():
        torch.testing.assert_close(ours[("resid_post", l)], ours[("resid_pre", l)] + ours[(out, l)], **TOL)


# --- loading --------------------------------------------------------------------------------------


def test_transformers_own_layout_loads_as_nvidias_does(nemotron, tmp_path):
    """NVIDIA's files: `backbone.*`, each expert apart (what save_pretrained writes); transformers' own
    module tree: `model.*`, the experts stacked. Both give transformers' logits."""
    from safetensors.torch import save_file

    handle, ref = nemotron
    ref.config.save_pretrained(tmp_path)
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    assert "model.layers.3.mixer.experts.up_proj" in state
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    mine = load_model(tmp_path, tokenizer=handle.tokenizer, device="cpu")
    with torch.no_grad():
        expected = ref(torch.tensor(IDS)).logits[..., :handle.vocab_size]
    torch.testing.assert_close(mine.logits(IDS), expected, **TOL)


def test_a_released_config_with_the_pattern_string_and_legacy_names_loads(nemotron, tiny_dirs, tmp_path):
    """NVIDIA's config.json files give the layers as hybrid_override_pattern and the Mamba sizes by
    their mamba_* names."""
    import shutil

    handle, ref = nemotron
    shutil.copytree(tiny_dirs[0]["nemotron_h"], tmp_path / "n")
    path = tmp_path / "n" / "config.json"
    config = json.loads(path.read_text())
    del config["layers_block_type"]
    config["hybrid_override_pattern"] = "M*-EM-"
    config["mamba_n_groups"], config["mamba_d_conv"] = config.pop("n_groups"), config.pop("conv_kernel")
    path.write_text(json.dumps(config))
    mine = load_model(tmp_path / "n", device="cpu")
    assert mine.layer_kinds == KINDS
    torch.testing.assert_close(mine.logits(IDS), handle.logits(IDS), atol=0, rtol=0)


@pytest.mark.parametrize("sizes", [{}, dict(moe_latent_size=12, mlp_bias=True, use_bias=True, use_conv_bias=False)])
def test_parameter_count_is_transformers_own(tmp_path, sizes):
    from conftest import build_nemotron_h
    from compare.base.checkpoint import read_config

    ref = build_nemotron_h(tmp_path / "n", with_tokenizer=False, **sizes)
    expected = sum(p.numel() for p in ref.parameters())
    assert FAMILIES["nemotron_h"].parameter_count(read_config(tmp_path / "n"), tmp_path / "n") == expected


def test_a_config_too_large_for_memory_is_refused_before_loading(tiny_dirs, monkeypatch):
    from compare.base import memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 1024)
    with pytest.raises(ModelLoadError, match="parameters: about .* more than"):
        load_model(tiny_dirs[0]["nemotron_h"], device="cpu")


# Nemotron-H-8B-Base-8K: 52 layers, 24 Mamba-2, 24 MLP and 4 attention, in the pattern NVIDIA's
# Megatron-Bridge documentation gives; its sizes are transformers' NemotronHConfig defaults.
NEMOTRON_H_8B = dict(model_type="nemotron_h",
                     hybrid_override_pattern="M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-",
                     vocab_size=131072, hidden_size=4096, intermediate_size=21504, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, mamba_num_heads=128, mamba_head_dim=64, ssm_state_size=128,
                     n_groups=8)


def test_the_8b_shape_counts_transformers_parameters_and_is_refused_before_loading_where_it_does_not_fit(
        tmp_path, monkeypatch):
    from transformers import NemotronHConfig, NemotronHForCausalLM
    from compare.base import memory

    config = {k: v for k, v in NEMOTRON_H_8B.items() if k != "model_type"}
    with torch.device("meta"):  # shapes only: no memory
        expected = sum(p.numel() for p in NemotronHForCausalLM(NemotronHConfig(**config)).parameters())
    assert FAMILIES["nemotron_h"].parameter_count(NEMOTRON_H_8B, tmp_path) == expected
    assert round(expected / 1e8) == 81  # 8.1 B
    (tmp_path / "config.json").write_text(json.dumps(NEMOTRON_H_8B))  # no weights: refused before reading them
    monkeypatch.setattr(memory, "available_bytes", lambda: 16 * 2**30)
    with pytest.raises(ModelLoadError, match=f"describes {expected:,} parameters: about .* more than"):
        load_model(tmp_path, device="cpu")


def _edited_config(tiny_dirs, tmp_path, edit):
    import shutil

    shutil.copytree(tiny_dirs[0]["nemotron_h"], tmp_path / "n")
    path = tmp_path / "n" / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))
    return tmp_path / "n"


def test_a_layer_pattern_that_disagrees_with_the_weights_is_refused_naming_the_layer(tiny_dirs, tmp_path):
    def swap(config):  # the attention and MLP layers swapped: M-*EM-
        del config["layers_block_type"]
        config["hybrid_override_pattern"] = "M-*EM-"

    with pytest.raises(ModelLoadError, match=r"layer 1 is an mlp layer in .*hybrid_override_pattern, but the "
                                             r"weights hold an attention layer for it"):
        load_model(_edited_config(tiny_dirs, tmp_path, swap), device="cpu")


def test_weights_with_more_layers_than_the_pattern_are_refused_naming_the_layer(tiny_dirs, tmp_path):
    def shorter(config):
        config["layers_block_type"] = config["layers_block_type"][:5]

    with pytest.raises(ModelLoadError, match=r"weights hold an mlp layer for layer 5, but .*layers_block_type "
                                             r"declares 5 layers"):
        load_model(_edited_config(tiny_dirs, tmp_path, shorter), device="cpu")


def test_an_unknown_layer_symbol_is_refused_naming_its_place(tiny_dirs, tmp_path):
    def unknown(config):
        del config["layers_block_type"]
        config["hybrid_override_pattern"] = "M*-EX-"

    with pytest.raises(ModelLoadError, match=r"hybrid_override_pattern\[4\] is 'X'; allowed: M \(Mamba-2\)"):
        load_model(_edited_config(tiny_dirs, tmp_path, unknown), device="cpu")


def test_sizes_that_disagree_with_the_weights_are_refused_naming_the_tensor_and_both_shapes(tiny_dirs, tmp_path):
    def wider(config):
        config["intermediate_size"] = 40

    with pytest.raises(ModelLoadError, match=r"4 tensors have other shapes, e\.g\. model\.layers\.2\.mixer\.down_proj"
                                             r"\.weight is \(32, 48\) where the config needs \(32, 40\)"):
        load_model(_edited_config(tiny_dirs, tmp_path, wider), device="cpu")


def test_aliases_name_the_released_checkpoints():
    assert ALIASES["nemotron-h-4b-base-8k"] == "nvidia/Nemotron-H-4B-Base-8K"
    assert ALIASES["nemotron-h-8b-base-8k"] == "nvidia/Nemotron-H-8B-Base-8K"
    assert ALIASES["nemotron-nano-9b-v2"] == "nvidia/NVIDIA-Nemotron-Nano-9B-v2"


# --- the analyses, unchanged -----------------------------------------------------------------------


def test_patching_every_point_of_a_layer_with_clean_values_restores_the_clean_logits(nemotron):
    assert_patching_restores_clean_logits(nemotron[0], (SSM_LAYER, ATTENTION_LAYER, MLP_LAYER, MOE_LAYER))


@pytest.mark.parametrize("component", ["mlp_out", "moe_out", "shared_out", "attn_out", "z", "mixer_out",
                                       "gated_norm", "x", "resid_post"])
def test_noise_sweep_equals_one_trace_per_run(nemotron, component):
    from compare import noise_sweep
    from compare.analyses.noise_ref import noise_sweep_ref

    kw = dict(model=nemotron[0], target=" Mary", component=component, levels=[0.0, 0.8, 3.0], trials=2, seed=3)
    fast, ref = noise_sweep(PROMPT, **kw), noise_sweep_ref(PROMPT, **kw)
    pd.testing.assert_frame_equal(fast.drop(columns=["p_target", "logit_diff"]),
                                  ref.drop(columns=["p_target", "logit_diff"]))
    np.testing.assert_allclose(fast["p_target"], ref["p_target"], atol=1e-5)
    np.testing.assert_allclose(fast["logit_diff"], ref["logit_diff"], atol=1e-4)
    assert sorted(set(fast["layer"])) == list(nemotron[0].arch.layers_with(nemotron[0].module, component))


@pytest.mark.parametrize("component", ["mlp_out", "attn_out", "write", "resid_post"])
def test_patch_sweep_equals_one_trace_per_patch(nemotron, component):
    from compare import patch_sweep
    from compare.analyses.patching_ref import patch_sweep_ref

    kw = dict(model=nemotron[0], component=component, answer=" Mary", wrong=" John")
    fast, ref = patch_sweep(PROMPT, CORRUPT, **kw), patch_sweep_ref(PROMPT, CORRUPT, **kw)
    keys = ["model", "layer", "kind", "position", "component"]
    assert fast[keys].equals(ref[keys])
    np.testing.assert_allclose(fast["metric_patched"], ref["metric_patched"], atol=1e-5, rtol=0)


def test_sweep_frames_carry_every_layers_kind(nemotron):
    from compare import patch_sweep

    df = patch_sweep(PROMPT, CORRUPT, model=nemotron[0], component="resid_post", answer=" Mary", wrong=" John")
    assert list(df.columns[:3]) == ["model", "layer", "kind"]
    assert df["kind"].tolist() == [KINDS[layer] for layer in df["layer"]]


def test_knockout_blocks_attention_and_ssm_layers_and_nothing_in_layers_that_mix_no_positions(nemotron):
    from compare import knockout

    handle = nemotron[0]
    kl = {layers: knockout(PROMPT, model=handle, sources=[9, 10, 11], target=-1, layers=list(layers)).iloc[0]["kl"]
          for layers in ((ATTENTION_LAYER,), (SSM_LAYER, 4), (0, 1, 4))}
    assert all(v > 0 for v in kl.values()) and len(set(kl.values())) == 3
    row = knockout(PROMPT, model=handle, sources=[9, 10, 11], target=-1, layers=[MLP_LAYER, MOE_LAYER, 5]).iloc[0]
    assert row["kl"] == 0 and row["p_after"] == row["p_before"]  # an MLP moves nothing between positions


def test_attention_map_reads_the_pattern_of_the_attention_layer_and_the_hidden_attention_of_a_mamba2_layer(nemotron):
    from compare import attention_map

    handle, ref = nemotron
    ids = [handle.encode(PROMPT)]
    weights = eager_attentions(ref, ids)[0]  # the one attention layer
    m = attention_map(ids[0], model=handle, layer=ATTENTION_LAYER)
    assert m.kind == "pattern"
    torch.testing.assert_close(torch.tensor(m.weights), weights[0].mean(0), **TOL)
    assert attention_map(ids[0], model=handle, layer=SSM_LAYER).kind == "hidden attention"


@pytest.mark.parametrize("layer,kind", [(MLP_LAYER, "mlp"), (MOE_LAYER, "moe")])
def test_attention_map_of_a_layer_that_mixes_no_positions_is_refused_naming_its_kind(nemotron, layer, kind):
    from compare import attention_map, hidden_attention

    with pytest.raises(ValueError, match=rf"layer {layer} is an {kind} layer, which mixes no positions.*\[0, 1, 4\]"):
        attention_map(PROMPT, model=nemotron[0], layer=layer)
    with pytest.raises(ValueError, match=rf"layer {layer} is an {kind} layer, which mixes no positions"):
        hidden_attention(PROMPT, model=nemotron[0], layer=layer)


def test_hidden_attention_of_a_mamba2_layer_reconstructs_its_y(nemotron):
    from compare.analyses.hidden_attention import reconstruct, terms

    handle = nemotron[0]
    ids = handle.encode(PROMPT)
    t = terms(handle, torch.tensor([ids]), layer=4)
    H, T = handle.arch.dims(handle.module.config)["H"], len(ids)
    assert t["alpha"].shape == (H, T, T) and torch.all(t["alpha"].triu(1) == 0)
    torch.testing.assert_close(reconstruct(t["alpha"], t["x"], t["D"]), t["y"], atol=1e-5, rtol=1e-4)


def test_compare_runs_it_beside_mamba_and_gpt2_with_transformers_logits(nemotron, tiny):
    from compare import compare

    handle, ref = nemotron
    result = compare(PROMPT, model=[handle, tiny[0]["mamba"], tiny[0]["gpt2"]], variant="native", progress=False)
    assert list(result.runs) == [handle.name, tiny[0]["mamba"].name, tiny[0]["gpt2"].name]
    with torch.no_grad():
        expected = ref(torch.tensor([handle.encode(PROMPT)])).logits[0, :, :handle.vocab_size]
    np.testing.assert_allclose(result.runs[handle.name].logits, expected.numpy(), atol=1e-5)
