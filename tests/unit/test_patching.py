"""patch_sweep: exact at the ends (all of the final residual recovers 1, nothing recovers 0), equal to the
one-trace-per-patch reference on every family, and clear errors for bad arguments."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from compare.analyses.patching import COLUMNS, METRICS, components, metric_of, patch_sweep
from compare.analyses.patching_ref import patch_sweep_ref

CLEAN = "When Mary and John went to the store , John gave a drink to"
CORRUPT = "When Mary and John went to the store , Mary gave a drink to"
KW = dict(answer=" Mary", wrong=" John")
TOL = 1e-5  # metric_patched, batched vs reference (one trace per patch)
FAMILIES = ("mamba", "gpt2", "pythia")


@pytest.mark.parametrize("family", FAMILIES + ("mamba_ssm", "granite_hybrid", "falcon_h1"))
@pytest.mark.parametrize("metric", METRICS)
def test_patching_every_position_of_the_last_residual_recovers_exactly_1_and_nothing_0(tiny, family, metric):
    handle = tiny[0][family]
    df = patch_sweep(CLEAN, CORRUPT, model=handle, component="resid_post", layers=[-1], positions=["all", ()],
                     metric=metric, **KW)
    assert df["position"].tolist() == ["all", "none"]
    assert df["recovery"].tolist() == [1.0, 0.0]
    assert df["metric_patched"].tolist() == [df.attrs["m_clean"][handle.name], df.attrs["m_corrupt"][handle.name]]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_unpatched_metrics_are_the_models_own_logits(tiny, family):
    handle = tiny[0][family]
    df = patch_sweep(CLEAN, CORRUPT, model=handle, component="resid_post", layers=[0], positions=[0], **KW)
    a, w = handle.encode(" Mary")[0], handle.encode(" John")[0]
    for run, prompt in (("m_clean", CLEAN), ("m_corrupt", CORRUPT)):
        logits = handle.logits(handle.encode(prompt))[0, -1]
        assert df.attrs[run][handle.name] == pytest.approx((logits[a] - logits[w]).item(), abs=TOL)


CASES = [("mamba", c) for c in ("h", "h_readout", "resid_pre", "norm", "gate", "x", "delta", "B", "C", "A_bar",
                                "B_bar", "write", "y", "mixer_out", "resid_post")]
CASES += [("gpt2", c) for c in ("resid_pre", "q", "k", "v", "z", "z.1", "attn_out", "resid_mid", "mlp_out", "resid_post")]
CASES += [("pythia", c) for c in ("resid_pre", "q", "k", "v", "z", "z.3", "attn_out", "mlp_out", "resid_post")]


EVERY_POSITION = {("mamba", "h"), ("mamba", "resid_post"), ("gpt2", "z.1"), ("pythia", "resid_pre")}


@pytest.mark.parametrize("family,component", CASES)
def test_batched_equals_the_one_trace_per_patch_reference(tiny, family, component):
    handle = tiny[0][family]
    positions = None if (family, component) in EVERY_POSITION else [0, 4, 9, 12, 13]  # the rest: a sample, for time
    kw = dict(model=handle, component=component, positions=positions, **KW)
    fast = patch_sweep(CLEAN, CORRUPT, **kw)
    ref = patch_sweep_ref(CLEAN, CORRUPT, **kw)
    assert list(fast.columns) == list(COLUMNS) == list(ref.columns)
    assert len(fast) == handle.n_layers * (14 if positions is None else len(positions))
    assert fast[["model", "layer", "position", "component"]].equals(ref[["model", "layer", "position", "component"]])
    np.testing.assert_allclose(fast["metric_patched"], ref["metric_patched"], atol=TOL, rtol=0)
    gap = abs(fast.attrs["m_clean"][handle.name] - fast.attrs["m_corrupt"][handle.name])
    np.testing.assert_allclose(fast["recovery"], ref["recovery"], atol=TOL * max(1, 1 / gap), rtol=0)
    assert fast["recovery"].abs().max() > 0.05  # the patch does something on these prompts


@pytest.mark.parametrize("family,component", [("mamba", "h"), ("mamba", "delta"), ("gpt2", "z.2"), ("pythia", "v")])
def test_groups_of_positions_and_chunking_equal_the_reference(tiny, family, component):
    handle = tiny[0][family]
    kw = dict(model=handle, component=component, positions=[(2, 9), "all", -1, (), (0, 13)], layers=[1, 0], **KW)
    ref = patch_sweep_ref(CLEAN, CORRUPT, **kw)
    for max_bytes in (1 << 20, 1 << 27):  # one patch per chunk, and all of a layer's in one
        fast = patch_sweep(CLEAN, CORRUPT, max_bytes=max_bytes, **kw)
        assert fast["position"].tolist() == ["2,9", "all", 13, "none", "0,13"] * 2
        assert fast["layer"].tolist() == [1] * 5 + [0] * 5
        np.testing.assert_allclose(fast["metric_patched"], ref["metric_patched"], atol=TOL, rtol=0)
    assert (fast[fast["position"] == "none"]["recovery"] == 0).all()


def test_h_patch_at_p_leaves_the_state_before_p_alone_and_carries_forward(tiny):
    # the state patched at the last position changes only the last read-out; at position 0 it reaches every later one
    handle = tiny[0]["mamba"]
    last = patch_sweep(CLEAN, CORRUPT, model=handle, component="h", layers=[1], positions=[13], **KW)
    readout = patch_sweep(CLEAN, CORRUPT, model=handle, component="h_readout", layers=[1], positions=[13], **KW)
    assert last["metric_patched"].iloc[0] == pytest.approx(readout["metric_patched"].iloc[0], abs=TOL)
    early = patch_sweep(CLEAN, CORRUPT, model=handle, component="h", layers=[1], positions=[9], **KW)
    early_readout = patch_sweep(CLEAN, CORRUPT, model=handle, component="h_readout", layers=[1], positions=[9], **KW)
    assert early_readout["recovery"].iloc[0] == 0  # y at position 9 does not reach the last position in the last layer
    assert early["recovery"].iloc[0] != 0  # the state does, through the recurrence


def test_several_models_side_by_side_and_metric_without_wrong(tiny):
    handles = tiny[0]
    df = patch_sweep(CLEAN, CORRUPT, model=[handles["mamba"], handles["gpt2"]], answer=" Mary",
                     component="resid_pre", layers=[0], metric="logit_diff")
    assert df["model"].unique().tolist() == ["mamba", "gpt2"]
    logits = handles["gpt2"].logits(handles["gpt2"].encode(CLEAN))[0, -1]
    a = handles["gpt2"].encode(" Mary")[0]
    others = logits.clone()
    others[a] = -torch.inf
    assert df.attrs["m_clean"]["gpt2"] == pytest.approx((logits[a] - others.max()).item(), abs=TOL)
    assert df.attrs["wrong"] == {"mamba": None, "gpt2": None}


def test_metric_of_each_metric():
    logits = torch.tensor([[1.0, 3.0, 2.0]])
    assert metric_of(logits, "logit", 2, None)[0] == 2.0
    assert metric_of(logits, "logit_diff", 2, 0)[0] == 1.0
    assert metric_of(logits, "logit_diff", 2, None)[0] == -1.0  # minus the best other
    assert metric_of(logits, "logit_diff", 1, None)[0] == 1.0
    assert metric_of(logits, "prob", 1, None)[0] == pytest.approx(torch.softmax(logits, -1)[0, 1].item())
    assert metric_of(logits, "logprob", 1, None)[0] == pytest.approx(torch.log_softmax(logits, -1)[0, 1].item())


def test_recovery_is_nan_when_the_two_runs_agree(tiny):
    with pytest.warns(RuntimeWarning, match="clean and corrupt are the same 14 tokens.*recovery .* is undefined"):
        df = patch_sweep(CLEAN, CLEAN, model=tiny[0]["gpt2"], component="resid_post", layers=[0], positions=[1], **KW)
    assert df["recovery"].isna().all()


def test_prompts_that_differ_give_no_warning(tiny):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        patch_sweep(CLEAN, CORRUPT, model=tiny[0]["gpt2"], component="resid_post", layers=[0], positions=[1], **KW)


def test_progress_counts_runs_per_layer_or_per_position_of_h(tiny):
    seen = []
    patch_sweep(CLEAN, CORRUPT, model=tiny[0]["gpt2"], component="attn_out", progress=lambda d, t: seen.append((d, t)), **KW)
    assert seen == [(14, 28), (28, 28)]  # layer by layer
    seen.clear()
    patch_sweep(CLEAN, CORRUPT, model=tiny[0]["mamba"], component="h", positions=[3, (5, 9), 5, ()],
                progress=lambda d, t: seen.append((d, t)), **KW)
    assert seen == [(2, 8), (6, 8)]  # position by position (3, then both patches starting at 5), every layer


class StopAfter:
    """A stop that is set once `n` progress reports have come."""

    def __init__(self, n):
        self.n, self.event = n, threading.Event()

    def report(self, done, total):
        self.n -= 1
        if self.n == 0:
            self.event.set()


@pytest.mark.parametrize("family,component,kept", [("gpt2", "attn_out", {(0, p) for p in range(14)}),
                                                   ("mamba", "h", {(layer, 0) for layer in (0, 1)})])
def test_stop_keeps_the_runs_finished(tiny, family, component, kept):
    stop = StopAfter(1)
    df = patch_sweep(CLEAN, CORRUPT, model=tiny[0][family], component=component, progress=stop.report,
                     stop=stop.event, **KW)
    assert df.attrs["stopped"] and set(zip(df["layer"], df["position"])) == kept
    ref = patch_sweep_ref(CLEAN, CORRUPT, model=tiny[0][family], component=component, positions=[0], **KW)
    first = df[df["position"] == 0].set_index("layer")["metric_patched"]
    expected = ref.set_index("layer")["metric_patched"].loc[first.index]
    np.testing.assert_allclose(first, expected, atol=TOL)


def test_a_stop_set_before_the_start_returns_no_rows(tiny):
    stop = threading.Event()
    stop.set()
    df = patch_sweep(CLEAN, CORRUPT, model=tiny[0]["gpt2"], component="attn_out", stop=stop, **KW)
    assert df.empty and df.attrs["stopped"] and list(df.columns) == list(COLUMNS)


def test_components_list_patchable_points_and_heads(tiny):
    handles = tiny[0]
    assert "h" in components(handles["mamba"]) and "pattern" not in components(handles["gpt2"])
    assert components(handles["gpt2"])[-4:] == ("z.0", "z.1", "z.2", "z.3")
    assert not any(c.startswith("z") for c in components(handles["mamba"]))


@pytest.mark.parametrize("kwargs,message", [
    (dict(corrupt="When Mary and John went to the store , John gave a drink"),
     r"same number of tokens.*clean is 14 tokens.*corrupt is 13"),
    (dict(component="pattern"), r"component 'pattern' cannot be patched; 'pattern' has no position axis.*valid: resid_pre"),
    (dict(component="logits"), r"cannot be patched; model-level points have no layer"),
    (dict(component="nope"), r"component 'nope' cannot be patched; valid:.*z\.0\.\.z\.3 \(one head\)"),
    (dict(component="z.4"), r"component 'z.4' cannot be patched"),
    (dict(layers=[2]), r"layers must be .*ints in 0\.\.1"),
    (dict(layers=[]), r"layers must be a non-empty list"),
    (dict(layers="0"), r"layers must be"),
    (dict(positions=[14]), r"positions must be token positions in -14\.\.13 for these 14-token prompts"),
    (dict(positions=[]), r"positions must name at least one patch"),
    (dict(positions="every"), r"positions must be None, 'all', or a list"),
    (dict(positions=[1.5]), r"positions must be token positions"),
    (dict(answer=" Mary Mary"), r"answer: ' Mary Mary' is 2 tokens"),
    (dict(answer=10**6), r"answer must be a one-token string or a token ID in 0\.\.63"),
    (dict(wrong=" Mary"), r"wrong must differ from answer"),
    (dict(metric="kl"), r"metric: 'kl' is not allowed; allowed values are logit_diff, logit, prob, logprob"),
    (dict(clean=""), r"clean must be a non-empty string"),
    (dict(model=3.5), r"model must be a loaded Model"),
    (dict(progress=3), r"progress: must be a callable"),
])
def test_bad_arguments_name_the_argument_and_the_allowed_values(tiny, kwargs, message):
    kw = dict(clean=CLEAN, corrupt=CORRUPT, model=tiny[0]["gpt2"], component="resid_post", **KW)
    kw.update(kwargs)
    with pytest.raises(ValueError, match=message):
        patch_sweep(kw.pop("clean"), kw.pop("corrupt"), **kw)


def test_a_list_of_models_is_checked_before_any_compute(tiny):
    handles = tiny[0]
    with pytest.raises(ValueError, match="mamba: component 'z' cannot be patched"):
        patch_sweep(CLEAN, CORRUPT, model=[handles["gpt2"], handles["mamba"]], component="z", **KW)
    with pytest.raises(ValueError, match="each model must appear once"):
        patch_sweep(CLEAN, CORRUPT, model=[handles["gpt2"], handles["gpt2"]], component="resid_pre", **KW)
