"""hidden_attention: α reconstructs the model's own y, equals the unrolled formula term by term, is
causal; head_pattern is transformers' own attention; memory beyond the bound is refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from compare.analyses.hidden_attention import attention_map, head_pattern, hidden_attention, reconstruct, terms

PROMPT = "When Mary and John went to the store , John gave a drink to"
IDS = [2, 3, 4, 5, 6, 7, 8, 9, 10, 5, 11, 12, 13, 7]


@pytest.mark.parametrize("family", ["mamba", "mamba_ssm"])
@pytest.mark.parametrize("layer", [0, 1])
def test_alpha_reconstructs_the_models_own_y(tiny, family, layer):
    handle = tiny[0][family]
    t = terms(handle, handle.as_input(IDS), layer=layer)
    assert t["alpha"].shape == (64, 14, 14)
    with torch.no_grad(), handle.nn.trace(torch.tensor([IDS])):
        y = handle.point("y", layer).save()
    torch.testing.assert_close(reconstruct(t["alpha"], t["x"], t["D"]), y[0], atol=1e-5, rtol=1e-5)


def test_alpha_is_the_unrolled_product_term_by_term(tiny):
    # α[c, t, s] = Σ_n C_t[n] · Π_{k=s+1..t} exp(Δ_k[c] A[c, n]) · Δ_s[c] B_s[n], written out as loops
    handle = tiny[0]["mamba"]
    channels = [0, 7, 63]
    t = terms(handle, handle.as_input(IDS), layer=1, channels=channels)
    with torch.no_grad(), handle.nn.trace(torch.tensor([IDS])):
        delta, B, C = (handle.point(p, 1).save() for p in ("delta", "B", "C"))
    A = -torch.exp(handle.module.layers[1].mixer.A_log.detach())
    delta, B, C = delta[0].double(), B[0].double(), C[0].double()
    for i, c in enumerate(channels):
        for tt in range(14):
            for s in range(14):
                if s > tt:
                    assert t["alpha"][i, tt, s] == 0
                    continue
                decay = torch.exp(delta[s + 1:tt + 1, c].sum() * A[c].double())
                expected = (C[tt] * decay * delta[s, c] * B[s]).sum()
                assert t["alpha"][i, tt, s].item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)


def test_reduce_and_channels(tiny):
    handle = tiny[0]["mamba"]
    full = hidden_attention(PROMPT, model=handle, layer=0, reduce="none")
    assert full.weights.shape == (64, 14, 14) and full.units == tuple(range(64)) and full.kind == "hidden attention"
    np.testing.assert_allclose(hidden_attention(PROMPT, model=handle, layer=0).weights, full.weights.mean(0), atol=1e-6)
    np.testing.assert_allclose(hidden_attention(PROMPT, model=handle, layer=0, reduce="abs_mean").weights,
                               np.abs(full.weights).mean(0), atol=1e-6)
    two = hidden_attention(PROMPT, model=handle, layer=0, channels=[5, 2], reduce=None)
    np.testing.assert_allclose(two.weights, full.weights[[5, 2]], atol=1e-6)
    assert full.tokens[:2] == ["When", "Mary"]


@pytest.mark.parametrize("family", ["gpt2", "pythia"])
def test_head_pattern_is_transformers_own_attention(tiny, family):
    handle, ref = tiny[0][family], tiny[1][family]
    ref.set_attn_implementation("eager")
    with torch.no_grad():
        expected = ref(torch.tensor([IDS]), output_attentions=True).attentions[1][0]  # [heads, T, T]
    got = head_pattern(PROMPT, model=handle, layer=1, reduce="none")
    np.testing.assert_allclose(got.weights, expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(head_pattern(PROMPT, model=handle, layer=1, heads=[1, 3]).weights,
                               expected[[1, 3]].mean(0).numpy(), atol=1e-5)
    assert attention_map(PROMPT, model=handle, layer=1).kind == "pattern"


def test_attention_map_gives_mamba_its_hidden_attention(tiny):
    assert attention_map(PROMPT, model=tiny[0]["mamba"], layer=1).kind == "hidden attention"


def test_memory_beyond_the_bound_is_refused_before_compute(tiny):
    # 64 channels × 14² positions × 4 bytes = 50,176 bytes
    handle = tiny[0]["mamba"]
    hidden_attention(PROMPT, model=handle, layer=0, max_bytes=50_176)
    with pytest.raises(ValueError, match=r"64 channels of a 14-token prompt holds T² × channels = 12,544 values "
                                         r"\(50,176 bytes\), more than max_bytes \(50,175 bytes\); pick fewer channels"):
        hidden_attention(PROMPT, model=handle, layer=0, max_bytes=50_175)


@pytest.mark.parametrize("family,kwargs,message", [
    ("gpt2", dict(), r"gpt2: hidden attention needs a selective SSM; GPT-2 mixes positions by attention"),
    ("mamba", dict(layer=2), r"layer must be an int in 0\.\.1"),
    ("mamba", dict(channels=[64]), r"channels must be a non-empty list of ints in 0\.\.63"),
    ("mamba", dict(channels=[]), r"channels must be a non-empty list"),
    ("mamba", dict(reduce="max"), r"reduce: 'max' is not allowed; allowed values are mean, abs_mean, none"),
])
def test_bad_arguments(tiny, family, kwargs, message):
    kw = dict(model=tiny[0][family], layer=0)
    kw.update(kwargs)
    with pytest.raises(ValueError, match=message):
        hidden_attention(PROMPT, **kw)


def test_head_pattern_refuses_mamba_and_bad_heads(tiny):
    with pytest.raises(ValueError, match="Mamba has no attention pattern; use hidden_attention"):
        head_pattern(PROMPT, model=tiny[0]["mamba"], layer=0)
    with pytest.raises(ValueError, match=r"heads must be a non-empty list of ints in 0\.\.3"):
        head_pattern(PROMPT, model=tiny[0]["gpt2"], layer=0, heads=[4])
