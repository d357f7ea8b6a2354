"""The package's analyses on a Mamba-2 handle, with no Mamba-2 code of their own: each fast path
against its one-trace-per-run reference, and the SSM-specific ones (patching h, knockout, hidden
attention) against a float64 loop or the unrolled formula."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from compare import causal_trace, compare, knockout, noise_sweep, patch_sweep
from compare.analyses.causal_trace_ref import causal_trace_ref
from compare.analyses.hidden_attention import hidden_attention, reconstruct, terms
from compare.engine.record import record_pass
from compare.analyses.noise_ref import noise_sweep_ref
from compare.analyses.patching_ref import patch_sweep_ref
from compare.ssm.scan import linear_scan_ref
from test_mamba2 import naive_forward

PROMPT = "When Mary and John went to the store , John gave a drink to"
CLEAN, CORRUPT = PROMPT, "When Mary and John went to the store , Mary gave a drink to"
IDS = [2, 3, 4, 5, 6, 7, 8, 9, 10, 5, 11, 12, 13, 7]


@pytest.fixture(scope="module")
def m2(tiny):
    """The tiny Mamba-2 handle (transformers' format) and the transformers model it came from."""
    return tiny[0]["mamba2"], tiny[1]["mamba2"]


@pytest.mark.parametrize("component", ["h", "h_readout", "write", "dt", "x", "B", "A_bar", "y", "gated_norm",
                                       "resid_post"])
def test_noise_sweep_fast_path_equals_one_trace_per_run(m2, component):
    kw = dict(model=m2[0], target=" Mary", component=component, levels=[0.0, 0.8, 3.0], trials=2, seed=3)
    fast, ref = noise_sweep(PROMPT, **kw), noise_sweep_ref(PROMPT, **kw)
    np.testing.assert_allclose(fast["p_target"], ref["p_target"], atol=1e-5)
    np.testing.assert_allclose(fast["logit_diff"], ref["logit_diff"], atol=1e-4)
    assert (fast["p_target"] != fast.groupby("layer")["p_target"].transform("first")).any()


def test_noise_on_the_state_restarts_from_y_at_chosen_positions(m2):
    """Noise on h at positions 3 and 9 only, relative scale: Δy by the decay from each noised
    position (`ssd.increment_into_y`) equals the trace that adds it to the hook point."""
    kw = dict(model=m2[0], target=" Mary", component="h", levels=[0.0, 0.5, 2.0], trials=2, seed=5,
              positions=[3, 9], scale="relative")
    fast, ref = noise_sweep(PROMPT, **kw), noise_sweep_ref(PROMPT, **kw)
    np.testing.assert_allclose(fast["p_target"], ref["p_target"], atol=1e-5)
    assert (fast["p_target"] != fast.groupby("layer")["p_target"].transform("first")).any()


def test_noise_on_the_state_by_scanned_increments_equals_one_trace_per_run(m2, monkeypatch):
    """Past PAIRED_POSITIONS noised positions Δy comes from the increments scanned as states."""
    monkeypatch.setattr("compare.ssm.ssd.PAIRED_POSITIONS", 2)
    kw = dict(model=m2[0], target=" Mary", component="h", levels=[0.0, 0.8, 3.0], trials=2, seed=3)
    fast, ref = noise_sweep(PROMPT, **kw), noise_sweep_ref(PROMPT, **kw)
    np.testing.assert_allclose(fast["p_target"], ref["p_target"], atol=1e-5)


def test_noise_on_B_is_carried_into_y():
    from compare.families.mamba2 import MAMBA2

    assert MAMBA2.point("B").into_y  # the sweep takes `restart.run_into_y`, not a noised block per run


@pytest.mark.parametrize("chunk", [None, 4])  # the prompt's 14 positions in one chunk, or across four
@pytest.mark.parametrize("positions", [None, [3, 9]])
def test_noise_on_B_as_the_ssd_of_the_noise_equals_one_trace_per_run(m2, monkeypatch, chunk, positions):
    """y is linear in B: Δy is the SSD with the noise for B (`ssd.increment_into_y`), and the sweep
    equals the trace that adds the noise to hook_B, both scales."""
    if chunk is not None:
        from functools import partial

        from compare.ssm.ssd import ssd_chunked

        monkeypatch.setattr("compare.ssm.ssd.ssd_chunked", partial(ssd_chunked, chunk=chunk))
    for scale in ("absolute", "relative"):
        kw = dict(model=m2[0], target=" Mary", component="B", levels=[0.0, 0.8, 3.0], trials=2, seed=7,
                  positions=positions, scale=scale)
        fast, ref = noise_sweep(PROMPT, **kw), noise_sweep_ref(PROMPT, **kw)
        np.testing.assert_allclose(fast["p_target"], ref["p_target"], atol=1e-5)
        np.testing.assert_allclose(fast["logit_diff"], ref["logit_diff"], atol=1e-4)
        assert (fast["p_target"] != fast.groupby("layer")["p_target"].transform("first")).any()


@pytest.mark.parametrize("component", ["A_bar", "h"])
def test_one_state_per_chunk_still_equals_the_reference(m2, component):
    """A budget of one materialised state: the edited block runs one row at a time, the blocks
    above it in chunks of several (`restart.edited_finals`, `restart.finals_from_y`)."""
    handle = m2[0]
    budget = handle.layer_bytes(14, ssm=True)
    kw = dict(model=handle, target=" Mary", component=component, levels=[0.0, 0.8, 3.0], trials=2, seed=3)
    fast, ref = noise_sweep(PROMPT, **kw, max_bytes=budget), noise_sweep_ref(PROMPT, **kw)
    np.testing.assert_allclose(fast["p_target"], ref["p_target"], atol=1e-5)
    kw = dict(model=handle, component=component, answer=" Mary", wrong=" John", positions=[3, (2, 9), "all"])
    fast, ref = patch_sweep(CLEAN, CORRUPT, **kw, max_bytes=budget), patch_sweep_ref(CLEAN, CORRUPT, **kw)
    np.testing.assert_allclose(fast["metric_patched"], ref["metric_patched"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("component", ["h", "write", "dt", "resid_post"])
def test_patch_sweep_equals_one_trace_per_patch(m2, component):
    kw = dict(model=m2[0], component=component, answer=" Mary", wrong=" John")
    fast, ref = patch_sweep(CLEAN, CORRUPT, **kw), patch_sweep_ref(CLEAN, CORRUPT, **kw)
    assert len(fast) == 2 * 14
    np.testing.assert_allclose(fast["metric_patched"], ref["metric_patched"], atol=1e-5, rtol=0)
    assert fast["recovery"].abs().max() > 0.05


def test_patching_B_as_the_ssd_of_the_increment_equals_one_trace_per_patch(m2):
    """B is an `into_y` point for patching too: the increment clean − corrupt of B at the patch's positions."""
    kw = dict(model=m2[0], component="B", answer=" Mary", wrong=" John", positions=[3, 9, (2, 9), "all"])
    fast, ref = patch_sweep(CLEAN, CORRUPT, **kw), patch_sweep_ref(CLEAN, CORRUPT, **kw)
    np.testing.assert_allclose(fast["metric_patched"], ref["metric_patched"], atol=1e-5, rtol=0)
    assert fast["recovery"].abs().max() > 0.01  # B patched moves the metric (less than h: one term of the write)


def test_patching_h_carries_the_clean_state_forward(m2):
    """Patching h at layer 0, position 9 equals the float64 loop run on the corrupt prompt with
    the clean run's state put in its recurrence at that position."""
    handle, hf = m2
    clean, corrupt = (torch.tensor([handle.encode(p)]) for p in (CLEAN, CORRUPT))
    record = {}
    with torch.no_grad():
        naive_forward(hf, clean, record=record)
        expected = naive_forward(hf, corrupt, edit=lambda l, t, h: record[0]["h"][9] if (l, t) == (0, 9) else h)
    df = patch_sweep(CLEAN, CORRUPT, model=handle, component="h", layers=[0], positions=[9], answer=" Mary",
                     wrong=" John")
    mary, john = handle.encode(" Mary")[0], handle.encode(" John")[0]
    assert df["metric_patched"].iloc[0] == pytest.approx((expected[0, -1, mary] - expected[0, -1, john]).item(), abs=1e-4)


@pytest.mark.parametrize("component,window", [("resid_post", 1), ("h", 3), ("dt", 1)])
def test_causal_trace_equals_one_trace_per_restoration(m2, component, window):
    kw = dict(model=m2[0], samples=3, window=window, component=component, seed=1)
    fast, ref = causal_trace(PROMPT, "Mary and", **kw), causal_trace_ref(PROMPT, "Mary and", **kw)
    np.testing.assert_allclose(fast["p_restored"], ref["p_restored"], atol=1e-5, rtol=0)
    assert fast["indirect_effect"].abs().max() > 1e-4


@pytest.mark.parametrize("layer,sources,target", [(1, [0, 3, 8], 13), (0, [2], 5), (0, [0, 1, 2, 3, 4], 4)])
def test_knockout_reads_out_a_state_rescanned_without_the_sources_writes(m2, layer, sources, target):
    handle = m2[0]
    with torch.no_grad(), handle.nn.trace(torch.tensor([IDS])):
        A_bar = handle.point("A_bar", layer)
        write = handle.point("write", layer).clone()
        write[:, sources] = 0
        handle.point("h_readout", layer)[:, target] = linear_scan_ref(A_bar[..., None, None], write)[:, target]
        expected = handle.point("logits").save()
    p = torch.softmax(expected[0, -1, :handle.vocab_size], -1)
    df = knockout(IDS, model=handle, sources=sources, target=target, layers=[layer], answer=5)
    assert df["p_after"].iloc[0] == pytest.approx(p[5].item(), abs=1e-5)
    assert df["p_after"].iloc[0] != df["p_before"].iloc[0]


@pytest.mark.parametrize("layer", [0, 1])
def test_hidden_attention_is_per_head_and_reconstructs_the_models_own_y(m2, layer):
    handle = m2[0]
    t = terms(handle, handle.as_input(IDS), layer=layer)
    assert t["alpha"].shape == (4, 14, 14) and t["channels"] == (0, 1, 2, 3)  # the 4 heads
    with torch.no_grad(), handle.nn.trace(torch.tensor([IDS])):
        y = handle.point("y", layer).save()
    torch.testing.assert_close(reconstruct(t["alpha"], t["x"], t["D"]), y[0], atol=1e-5, rtol=1e-5)


def test_hidden_attention_is_the_unrolled_product_term_by_term(m2):
    # α[h, t, s] = Σ_n C_t[n] · Π_{k=s+1..t} exp(Δ_k[h] A[h]) · Δ_s[h] B_s[n], B and C of h's group
    handle = m2[0]
    heads = [0, 3]
    t = terms(handle, handle.as_input(IDS), layer=1, channels=heads)
    seen = record_pass(handle, handle.as_input(IDS), [(name, 1) for name in ("B", "C", "dt")]).at(1)  # by torch hooks, one forward
    B, C, dt = (seen[name][0].double() for name in ("B", "C", "dt"))
    A = -torch.exp(handle.module.layers[1].mixer.A_log.detach().double())
    for i, h in enumerate(heads):
        g = h // 2  # 4 heads in 2 groups
        for tt in range(14):
            for s in range(tt + 1):
                expected = (C[tt, g] * B[s, g]).sum() * torch.exp(dt[s + 1:tt + 1, h].sum() * A[h]) * dt[s, h]
                assert t["alpha"][i, tt, s].item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)
            assert torch.all(t["alpha"][i, tt, tt + 1:] == 0)
    assert hidden_attention(PROMPT, model=handle, layer=0, channels=[1]).weights.shape == (14, 14)


def test_compare_mamba2_beside_mamba_and_pythia(m2, tiny):
    handle = m2[0]
    result = compare(PROMPT, [handle, tiny[0]["mamba"], tiny[0]["pythia"]], progress=False)
    assert set(result.same_tokenizer) == {tiny[0]["mamba"].name, tiny[0]["pythia"].name}
    run = result.runs[handle.name]
    assert run.family == "mamba2"
    np.testing.assert_allclose(run.logits, handle.logits(handle.encode(PROMPT))[0].numpy(), atol=1e-5)
