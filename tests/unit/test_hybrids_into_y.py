"""The hybrids' Mamba-2 layers restart from y (`Point.into_y`), as pure Mamba-2 does: noise or a patch
on h, h_readout, write or B of an SSM layer of Granite-4.0-H, Falcon-H1 or Nemotron-H changes y
linearly (`ssd.increment_into_y`), so the layer runs once, clean, and the block is finished from y
(`HybridFamily.block_from_y`) instead of running the noised block per run. Each sweep is checked
against its one-trace-per-run reference (the hook point's own edit in a plain forward), with a spy
showing that the y-path ran and that no run materialised a state."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from compare import noise_sweep, patch_sweep
from compare.analyses.noise_ref import noise_sweep_ref
from compare.analyses.patching_ref import patch_sweep_ref
from compare.families.hybrid import HybridFamily
from test_hybrids import CORRUPT, PROMPT

HYBRIDS = ("granite_hybrid", "falcon_h1", "nemotron_h")
INTO_Y = ("h", "h_readout", "write", "B")


@pytest.fixture
def spy(monkeypatch):
    """Counts of what ran: calls of `noise_into_y` and `block_from_y`, and the batch size of every
    state the hooked mixer materialised (`hybrid.materialised_ssd`)."""
    import compare.families.hybrid as hybrid

    seen = {"noise_into_y": 0, "block_from_y": 0, "materialised": []}
    into_y, from_y, materialised = HybridFamily.noise_into_y, HybridFamily.block_from_y, hybrid.materialised_ssd

    def counting_into_y(self, *args, **kwargs):
        seen["noise_into_y"] += 1
        return into_y(self, *args, **kwargs)

    def counting_from_y(self, *args, **kwargs):
        seen["block_from_y"] += 1
        return from_y(self, *args, **kwargs)

    def recording(mixer, x, *args):
        seen["materialised"].append(x.shape[0])
        return materialised(mixer, x, *args)

    monkeypatch.setattr(HybridFamily, "noise_into_y", counting_into_y)
    monkeypatch.setattr(HybridFamily, "block_from_y", counting_from_y)
    monkeypatch.setattr(hybrid, "materialised_ssd", recording)
    return seen


def assert_ran_from_y(seen):
    assert seen["noise_into_y"] > 0 and seen["block_from_y"] > 0
    assert all(rows == 1 for rows in seen["materialised"])  # only the clean row's state (B's needs none)


def test_the_points_into_y_are_the_ssm_layers_state_and_B_only(tiny):
    for family in HYBRIDS:
        arch = tiny[0][family].arch
        assert {p.name for p in arch.points if p.into_y} == set(INTO_Y)
        assert all(p.kinds == ("ssm",) for p in arch.points if p.into_y)  # never an attention, MLP or MoE layer's


@pytest.mark.parametrize("family", HYBRIDS)
@pytest.mark.parametrize("component", INTO_Y)
def test_noise_sweep_from_y_equals_one_trace_per_run(tiny, spy, family, component):
    handle = tiny[0][family]
    kw = dict(model=handle, target=" Mary", component=component, levels=[0.0, 0.8, 3.0], trials=2, seed=3)
    fast = noise_sweep(PROMPT, **kw)
    assert_ran_from_y(spy)
    ref = noise_sweep_ref(PROMPT, **kw)
    assert sorted(set(fast["layer"])) == list(handle.arch.layers_with(handle.module, component))
    np.testing.assert_allclose(fast["p_target"], ref["p_target"], atol=1e-5)
    np.testing.assert_allclose(fast["logit_diff"], ref["logit_diff"], atol=1e-4)
    assert (fast["p_target"] != fast.groupby("layer")["p_target"].transform("first")).any()


@pytest.mark.parametrize("family", HYBRIDS)
@pytest.mark.parametrize("component,positions", [("h", [3, 9]), ("h", [12]), ("write", [0, 5, 13]),
                                                 ("h_readout", [2, 9]), ("B", [3, 9])])
def test_noise_at_chosen_positions_on_the_relative_scale_equals_one_trace_per_run(tiny, spy, family, component,
                                                                                 positions):
    kw = dict(model=tiny[0][family], target=" Mary", component=component, levels=[0.0, 0.5, 2.0], trials=2, seed=5,
              positions=positions, scale="relative", draws="ray")
    fast = noise_sweep(PROMPT, **kw)
    assert_ran_from_y(spy)
    np.testing.assert_allclose(fast["p_target"], noise_sweep_ref(PROMPT, **kw)["p_target"], atol=1e-5)


def test_noise_on_the_state_by_scanned_increments_equals_one_trace_per_run(tiny, spy, monkeypatch):
    """Past PAIRED_POSITIONS noised positions Δy comes from the increments scanned as states."""
    monkeypatch.setattr("compare.ssm.ssd.PAIRED_POSITIONS", 2)
    kw = dict(model=tiny[0]["falcon_h1"], target=" Mary", component="h", levels=[0.0, 0.8, 3.0], trials=2, seed=3)
    fast = noise_sweep(PROMPT, **kw)
    assert_ran_from_y(spy)
    np.testing.assert_allclose(fast["p_target"], noise_sweep_ref(PROMPT, **kw)["p_target"], atol=1e-5)


@pytest.mark.parametrize("family", HYBRIDS)
@pytest.mark.parametrize("component", INTO_Y)
def test_patch_sweep_from_y_equals_one_trace_per_patch(tiny, spy, family, component):
    """Single positions, several at once, every position, and none; the rows join the suffix wavefront
    from y (`patching._entering`)."""
    kw = dict(model=tiny[0][family], component=component, answer=" Mary", wrong=" John",
              positions=[3, 9, 12, (2, 9), (5, 10, 13), "all", ()])
    fast = patch_sweep(PROMPT, CORRUPT, **kw)
    assert_ran_from_y(spy)
    ref = patch_sweep_ref(PROMPT, CORRUPT, **kw)
    keys = ["model", "layer", "kind", "position", "component"]
    assert fast[keys].equals(ref[keys])
    np.testing.assert_allclose(fast["metric_patched"], ref["metric_patched"], atol=1e-5, rtol=0)
    assert fast["recovery"].abs().max() > 0  # the patch moves the metric
    assert (fast.loc[fast["position"] == "none", "recovery"] == 0).all()


def test_patch_sweep_from_y_in_chunks_of_one_row_equals_one_trace_per_patch(tiny, spy):
    """A budget of one row per block call: each patch's rows finished from y one at a time."""
    handle = tiny[0]["granite_hybrid"]
    kw = dict(model=handle, component="h", answer=" Mary", wrong=" John", positions=[3, (2, 9), "all"])
    budget = handle.layer_bytes(len(handle.encode(PROMPT)), ssm=True)
    fast = patch_sweep(PROMPT, CORRUPT, **kw, max_bytes=budget)
    assert_ran_from_y(spy)
    np.testing.assert_allclose(fast["metric_patched"], patch_sweep_ref(PROMPT, CORRUPT, **kw)["metric_patched"],
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("family,component", [("granite_hybrid", "attn_out"), ("falcon_h1", "attn_out"),
                                              ("falcon_h1", "x"), ("nemotron_h", "mlp_out")])
def test_points_not_into_y_run_the_edited_block_as_before(tiny, spy, family, component):
    kw = dict(model=tiny[0][family], target=" Mary", component=component, levels=[0.0, 0.8], trials=2, seed=3)
    fast = noise_sweep(PROMPT, **kw)
    assert spy["noise_into_y"] == spy["block_from_y"] == 0
    np.testing.assert_allclose(fast["p_target"], noise_sweep_ref(PROMPT, **kw)["p_target"], atol=1e-5)


@pytest.mark.parametrize("family,layer", [("granite_hybrid", 0), ("falcon_h1", 0), ("nemotron_h", 4)])
def test_the_block_from_the_clean_y_is_transformers_layer_output(tiny, family, layer):
    """block_from_y of the clean y is transformers' own layer output (its hidden state after the layer),
    the MLP, multipliers and Falcon-H1's attention branch included."""
    from compare.engine.record import record_pass
    from compare.engine.restart import y_terms

    handle, ref = tiny[0][family], tiny[1][family]
    ids = torch.tensor([handle.encode(PROMPT)])
    with torch.no_grad():
        expected = ref(ids, output_hidden_states=True).hidden_states[layer + 1]
        entry = record_pass(handle, ids, entries=[layer]).entries[layer]
        terms = y_terms(handle, "h", layer, entry)
        out = handle.arch.block_from_y(handle.module, layer, terms, entry[0][0], terms["y"].repeat(2, 1, 1, 1))
    assert out.shape == (2, *expected.shape[1:])
    torch.testing.assert_close(out, expected.expand(2, -1, -1), atol=1e-5, rtol=1e-4)
