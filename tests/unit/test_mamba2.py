"""The Mamba-2 family: loading both on-disk formats, logits against transformers' own
`Mamba2ForCausalLM` (its pure-PyTorch path, the one it runs on CPU), every hook point and the
state's edit semantics against a naive float64 loop over positions, and refused configs."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import build_mamba2_hf, build_mamba2_ssm, mamba_ssm_config, shared_tokenizer

IDS = torch.tensor([[2, 3, 4, 5, 6, 7, 8, 9, 10, 5, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]])
TOL = dict(atol=1e-4, rtol=0)
@pytest.fixture(scope="module")
def tiny2(tmp_path_factory):
    from compare import load_model

    root = tmp_path_factory.mktemp("mamba2")
    refs = {"hf": build_mamba2_hf(root / "hf"), "ssm": build_mamba2_ssm(root / "ssm")}
    return {name: load_model(root / name, device="cpu") for name in refs}, refs


def naive_forward(hf, ids, edit=None, record=None):
    """Mamba-2 from the transformers model's weights in float64, one position at a time.

    edit(layer, t, h) -> h: replaces the state inside the recurrence (it is carried on).
    record: filled with {layer: {point: value [l, ...]}}.
    """
    bb, c = hf.backbone, hf.config
    d_in, heads, p, g, n = c.expand * c.hidden_size, c.num_heads, c.head_dim, c.n_groups, c.state_size
    resid = bb.embeddings.weight[ids[0]].double()
    l = resid.shape[0]

    def rms(v, w, eps):
        return v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps) * w.double()

    for li, layer in enumerate(bb.layers):
        w = {k: v.double() for k, v in layer.mixer.state_dict().items()}
        u = rms(resid, layer.norm.weight, layer.norm.variance_epsilon)
        z, xBC, dt = (u @ w["in_proj.weight"].T).split([d_in, d_in + 2 * g * n, heads], -1)
        k = w["conv1d.weight"].shape[-1]
        xBC = F.silu(torch.stack([sum(w["conv1d.weight"][:, 0, k - 1 - j] * xBC[t - j] for j in range(k) if t - j >= 0)
                                  + w["conv1d.bias"] for t in range(l)]))
        x, B, C = xBC[:, :d_in].view(l, heads, p), xBC[:, d_in:d_in + g * n].view(l, g, n), xBC[:, d_in + g * n:].view(l, g, n)
        dt = F.softplus(dt + w["dt_bias"])
        A = -torch.exp(w["A_log"])
        h, hs, ys = torch.zeros(heads, p, n, dtype=torch.float64), [], []
        for t in range(l):
            Bh, Ch = B[t].repeat_interleave(heads // g, 0), C[t].repeat_interleave(heads // g, 0)  # [heads, n]
            h = torch.exp(dt[t] * A)[:, None, None] * h + (dt[t, :, None] * x[t])[..., None] * Bh[:, None, :]
            if edit is not None:
                h = edit(li, t, h)
            hs.append(h)
            ys.append((h * Ch[:, None, :]).sum(-1) + w["D"][:, None] * x[t])
        y = torch.stack(ys)
        v = y.reshape(l, d_in) * F.silu(z)
        grouped = v.view(l, g, d_in // g)
        gated = (grouped * torch.rsqrt(grouped.pow(2).mean(-1, keepdim=True) + layer.mixer.norm.variance_epsilon)).view(l, d_in)
        gated = gated * w["norm.weight"]
        mixer_out = gated @ w["out_proj.weight"].T
        if record is not None:
            record[li] = dict(resid_pre=resid, norm=u, gate=z, x=x, B=B, C=C, dt=dt, A_bar=torch.exp(dt * A),
                              h=torch.stack(hs), y=y, gated_norm=gated, mixer_out=mixer_out)
        resid = resid + mixer_out
    out = rms(resid, bb.norm_f.weight, bb.norm_f.variance_epsilon)
    return (out @ hf.lm_head.weight.double().T).unsqueeze(0)


# --- loading and logits ---------------------------------------------------------------------------------

def test_naive_oracle_matches_transformers(tiny2):
    hf = tiny2[1]["hf"]
    with torch.no_grad():
        torch.testing.assert_close(naive_forward(hf, IDS).float(), hf(IDS).logits, **TOL)


@pytest.mark.parametrize("name", ["hf", "ssm"])
def test_logits_equal_transformers_in_both_formats(tiny2, name):
    handle, ref = tiny2[0][name], tiny2[1][name]
    assert handle.family == "mamba2"
    ids = torch.randint(0, handle.vocab_size, (2, 150), generator=torch.Generator().manual_seed(0))  # > 2 chunks
    with torch.no_grad():
        expected = ref(ids).logits[..., :handle.vocab_size]
    torch.testing.assert_close(handle.logits(ids), expected, **TOL)


def test_mamba_ssm_format_pads_the_vocabulary_and_ties_the_head(tiny2):
    module = tiny2[0]["ssm"].module
    assert module.embeddings.weight.shape[0] == 72  # vocab_size 70 padded to a multiple of 8
    assert module.lm_head.weight is module.embeddings.weight


def test_aliases_name_the_state_spaces_checkpoints():
    from compare.handle.loading import ALIASES

    assert {a: ALIASES[a] for a in ALIASES if a.startswith("mamba2-")} == {
        f"mamba2-{s}": f"state-spaces/mamba2-{s}" for s in ("130m", "370m", "780m", "1.3b", "2.7b")}


def test_the_gpt_neox_tokenizer_reads_mamba2_as_mamba_and_pythia(tmp_path):
    from compare import load_model

    neox = shared_tokenizer("gpt-neox-20b")
    build_mamba2_hf(tmp_path / "m", n_layer=1, vocab=50288, with_tokenizer=False)
    handle = load_model(tmp_path / "m", tokenizer=neox, device="cpu")
    assert (handle.vocab_size, handle.encode(" Mary")) == (50277, [6393])


# --- hook points ------------------------------------------------------------------------------------------

POINTS = ("resid_pre", "norm", "gate", "x", "B", "C", "dt", "A_bar", "h", "y", "gated_norm", "mixer_out")
FORWARD_ORDER = ("resid_pre", "norm", "gate", "x", "B", "C", "dt", "A_bar", "write", "h", "h_readout", "y",
                 "gated_norm", "mixer_out", "resid_post")  # a trace reads points in the order the model runs


def test_every_point_equals_the_naive_loop(tiny2):
    handle, hf = tiny2[0]["hf"], tiny2[1]["hf"]
    record = {}
    with torch.no_grad():
        naive_forward(hf, IDS, record=record)
    got = [{} for _ in range(handle.n_layers)]
    with torch.no_grad(), handle.nn.trace(IDS):
        for layer in range(handle.n_layers):
            for name in FORWARD_ORDER:
                got[layer][name] = handle.point(name, layer).save()
    for layer, ref in record.items():
        for name in POINTS:
            torch.testing.assert_close(got[layer][name][0].double(), ref[name], atol=1e-5, rtol=1e-4,
                                       msg=f"layer {layer} point {name}")
        torch.testing.assert_close(got[layer]["h_readout"][0].double(), ref["h"], atol=1e-5, rtol=1e-4)
        dt, x, B = ref["dt"], ref["x"], ref["B"].repeat_interleave(2, 1)
        torch.testing.assert_close(got[layer]["write"][0].double(), (dt[..., None] * x)[..., None] * B[:, :, None],
                                   atol=1e-5, rtol=1e-4)
    assert got[0]["h"].shape == (1, IDS.shape[1], 4, 16, 8)


def test_registry_shapes_are_the_traced_shapes(tiny2):
    handle = tiny2[0]["hf"]
    for name in handle.arch.noisable:
        with torch.no_grad(), handle.nn.trace(IDS):
            value = handle.point(name, 0).save()
        assert tuple(value.shape[2:]) == handle.arch.feature_shape(handle.module.config, name), name


def test_reading_the_state_changes_nothing(tiny2):
    handle = tiny2[0]["hf"]
    with torch.no_grad(), handle.nn.trace(IDS):
        handle.point("h", 1).save()
        logits = handle.point("logits").save()
    torch.testing.assert_close(logits[..., :handle.vocab_size], handle.logits(IDS), atol=1e-5, rtol=0)


@pytest.mark.parametrize("p", [0, 7, 20])
def test_editing_h_at_p_changes_every_later_position_and_none_before(tiny2, p):
    handle, hf = tiny2[0]["hf"], tiny2[1]["hf"]
    noise = torch.randn(4, 16, 8, generator=torch.Generator().manual_seed(p)) * 0.5
    with torch.no_grad(), handle.nn.trace(IDS):
        handle.point("h", 0)[0, p] += noise
        logits = handle.point("logits").save()

    def edit(layer, t, h):
        return h + noise.double() if layer == 0 and t == p else h

    with torch.no_grad():
        expected = naive_forward(hf, IDS, edit=edit).float()
    torch.testing.assert_close(logits, expected, **TOL)
    with torch.no_grad(), handle.nn.trace(IDS):  # the same path (the state materialised), unedited
        handle.point("h", 0).save()
        clean = handle.point("logits").save()
    change = (logits - clean).abs().amax(-1)[0]
    assert torch.all(change[:p] == 0)
    assert torch.all(change[p:] > 1e-4)


def test_hidden_attention_of_the_models_own_points_reconstructs_y(tiny2):
    from compare.ssm.ssd import ssd_attention

    handle = tiny2[0]["hf"]
    with torch.no_grad(), handle.nn.trace(IDS):
        x, B, C, dt, y = (handle.point(n, 1).save() for n in ("x", "B", "C", "dt", "y"))
    alpha = ssd_attention(dt, -torch.exp(handle.module.layers[1].mixer.A_log), B, C)  # [1, heads, T, T]
    D = handle.module.layers[1].mixer.D
    torch.testing.assert_close(torch.einsum("bhts,bshp->bthp", alpha, x) + D[:, None] * x, y, atol=1e-5, rtol=1e-5)


# --- refused configs ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("key,value,message", [
    ("headdim", 8, r"ssm_cfg.headdim is 8 \(8 heads\), the weights have 16 \(4 heads"),
    ("ngroups", 1, r"ssm_cfg.ngroups is 1, the weights have 2"),
    ("d_state", 12, r"ssm_cfg.d_state is 12, the weights have 8"),
    ("pad_vocab_size_multiple", 16, r"vocab_size padded to pad_vocab_size_multiple gives 80 embedding rows, "
                                    r"the weights have 72"),
])
def test_a_mamba_ssm_config_the_weights_contradict_is_refused(tmp_path, key, value, message):
    from compare import ModelLoadError, load_model

    build_mamba2_ssm(tmp_path / "m", config=mamba_ssm_config(**{key: value}))
    with pytest.raises(ModelLoadError, match=message):
        load_model(tmp_path / "m", device="cpu")


def test_a_transformers_config_the_weights_contradict_is_refused(tmp_path):
    from compare import ModelLoadError, load_model

    build_mamba2_hf(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "state_size": 12}))
    with pytest.raises(ModelLoadError, match=r"state_size is 12, the weights have 8"):
        load_model(tmp_path / "m", device="cpu")


def test_a_hybrid_with_attention_layers_is_refused_saying_so(tmp_path):
    from compare import ModelLoadError, load_model

    build_mamba2_ssm(tmp_path / "m", config=mamba_ssm_config(attn_layer_idx=[1]))
    with pytest.raises(ModelLoadError, match=r"attn_layer_idx \[1\].*hybrid models are not supported yet"):
        load_model(tmp_path / "m", device="cpu")


# --- the real shape ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_mamba2_130m_shape_with_random_weights_is_within_transformers_own_fp32_error(tmp_path):
    """d_model 768, 24 layers, d_state 128, headdim 64, expand 2, ngroups 1; GPT-style random
    weights (`init_random_`'s scale, so the residual stays O(1) as in a trained model). Our
    error against transformers' float64 run is at most 2× transformers' own fp32 error."""
    from compare import load_model
    from compare.ssm.mamba import init_random_

    ref = build_mamba2_hf(tmp_path / "m", n_layer=24, vocab=50288, with_tokenizer=False, hidden_size=768,
                          state_size=128, head_dim=64, num_heads=24, n_groups=1, chunk_size=256)
    init_random_(ref, seed=0, n_layer=24)
    ref.save_pretrained(tmp_path / "m")
    handle = load_model(tmp_path / "m", tokenizer=shared_tokenizer("gpt-neox-20b"), device="cpu")
    ids = torch.randint(0, 50277, (1, 300), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fp32 = ref(ids).logits[..., :50277]
        fp64 = ref.double()(ids).logits[..., :50277]
    ours = handle.logits(ids).double()
    own_error = (fp32.double() - fp64).abs().max().item()
    assert (ours - fp64).abs().max().item() <= max(2 * own_error, 1e-5)
    assert math.isfinite(own_error) and own_error > 0


def test_bfloat16_runs_the_matmuls_in_bf16_and_the_scan_and_state_in_fp32(tmp_path):
    from compare import load_model

    build_mamba2_hf(tmp_path / "m")
    fp32, bf16 = (load_model(tmp_path / "m", device="cpu", dtype=d) for d in ("float32", "bfloat16"))
    mixer = bf16.module.layers[0].mixer
    assert mixer.in_proj.weight.dtype == torch.bfloat16 and mixer.A_log.dtype == mixer.conv1d.weight.dtype == torch.float32
    with torch.no_grad(), bf16.nn.trace(IDS):
        h = bf16.point("h", 0).save()
    assert h.dtype == torch.float32
    assert (bf16.logits(IDS) - fp32.logits(IDS)).abs().max() < 0.05 * fp32.logits(IDS).abs().max()
