"""attribution_patch: against the exact patch_sweep on the same pairs (correlation over layers ×
positions; exact where the metric is affine in the patched value), the gradient of an edit of
Mamba's h through the recurrence against finite differences, and bad input refused."""
from __future__ import annotations

import numpy as np
import pytest

from compare import patch_sweep, study
from compare.analyses import attribution
from compare.analyses.attribution import COLUMNS, attribution_patch
from compare.base import memory
from compare.study import spec as study_spec
from test_lens import identity_norm

CLEAN = "When Mary and John went to the store , John gave a drink to"
CORRUPT = "When Mary and John went to the store , Mary gave a drink to"
KW = dict(answer=" Mary", wrong=" John")
# Plain attribution (steps=1) on tiny Pythia is left out: on this pair the patched values are far
# from the corrupt ones along a nonlinear path (the module docstring, "Along a path"); measured
# 0.00 (resid_pre), 0.37 (attn_out), 0.22 (resid_post). Its gradients are checked by finite
# differences below, and the path estimate (steps=4) is held to the same bar on every family.
CORRELATED = [("mamba", "resid_pre", 1), ("mamba", "resid_post", 1), ("mamba", "h", 1),
              ("gpt2", "resid_pre", 1), ("gpt2", "resid_mid", 1), ("gpt2", "resid_post", 1),
              ("mamba", "resid_pre", 4), ("mamba", "resid_post", 4), ("mamba", "h", 4),
              ("gpt2", "resid_pre", 4), ("gpt2", "attn_out", 4), ("gpt2", "resid_post", 4),
              ("pythia", "resid_pre", 4), ("pythia", "attn_out", 4), ("pythia", "resid_post", 4),
              ("mamba2", "resid_pre", 4), ("falcon_h1", "resid_pre", 4)]
PEARSON = 0.9


def exact_change(handle, component, **kw):
    df = patch_sweep(CLEAN, CORRUPT, model=handle, component=component, **KW, **kw)
    return df, df["metric_patched"].to_numpy() - df.attrs["m_corrupt"][handle.name]


def shifted(estimate, n_layers):
    """The estimates moved one position later within each layer (a wrong-position estimate)."""
    return np.roll(np.asarray(estimate).reshape(n_layers, -1), 1, axis=1).ravel()


@pytest.mark.parametrize("family,component,steps", CORRELATED)
def test_estimates_correlate_with_exact_patching_over_layers_and_positions(tiny, family, component, steps):
    """Pearson over every (layer, position) cell, the cells both leave at 0 (positions before the
    changed token) included; the same bar refuses the estimate with its sign flipped or moved
    one position, so it measures agreement cell by cell."""
    handle = tiny[0][family]
    est = attribution_patch(CLEAN, CORRUPT, model=handle, components=[component], steps=steps, **KW)
    exact, change = exact_change(handle, component)
    assert list(est.columns) == list(COLUMNS)
    assert est[["layer", "position"]].equals(exact[["layer", "position"]])
    estimate = est["estimate"].to_numpy()
    assert np.corrcoef(change, estimate)[0, 1] >= PEARSON
    assert np.corrcoef(change, -estimate)[0, 1] < PEARSON
    assert np.corrcoef(change, shifted(estimate, handle.n_layers))[0, 1] < PEARSON


@pytest.mark.parametrize("family", ["mamba", "gpt2", "pythia", "mamba2"])
def test_path_estimates_of_a_layers_residual_sum_to_the_whole_effect(tiny, family):
    """resid_pre of a layer is a cut: everything later reads the input only through it, so along
    the path the positions' estimates sum to m_clean − m_corrupt (the chain rule), which two plain
    forwards give independently; the trapezoid rule's error falls as 1/steps²."""
    handle = tiny[0][family]
    logits = {run: handle.logits(handle.encode(text))[0, -1] for run, text in (("clean", CLEAN), ("corrupt", CORRUPT))}
    a, w = handle.encode(" Mary")[0], handle.encode(" John")[0]
    whole = float((logits["clean"][a] - logits["clean"][w]) - (logits["corrupt"][a] - logits["corrupt"][w]))
    est = attribution_patch(CLEAN, CORRUPT, model=handle, components=["resid_pre"], steps=16, **KW)
    sums = est.groupby("layer")["estimate"].sum()
    np.testing.assert_allclose(sums, whole, rtol=2e-2, atol=1e-4)
    assert est.attrs["m_clean"][handle.name] - est.attrs["m_corrupt"][handle.name] == pytest.approx(whole, abs=1e-4)


@pytest.mark.parametrize("family,component", [
    ("mamba", "resid_post"), ("mamba", "mixer_out"), ("mamba", "y"), ("mamba", "h"),
    ("gpt2", "resid_post"), ("gpt2", "mlp_out"),
    ("pythia", "resid_post"), ("pythia", "attn_out"), ("pythia", "mlp_out")])
def test_exact_where_the_metric_is_affine_in_the_patched_value(tiny, family, component):
    """The last layer, the last position, logit_diff with `wrong`, the final norm the identity:
    the metric is affine in these values (Mamba's h_T through y_T = C_T · h_T + D x_T; Pythia's
    attn_out as its MLP runs in parallel, not GPT-2's, whose MLP reads it)."""
    handle = identity_norm(tiny[0][family])
    kw = dict(layers=[-1], positions=[-1])
    est = attribution_patch(CLEAN, CORRUPT, model=handle, components=[component], **KW, **kw)
    _, change = exact_change(handle, component, **kw)
    np.testing.assert_allclose(est["estimate"], change, rtol=1e-4, atol=1e-6)
    assert abs(change[0]) > 1e-3  # a real effect, not 0 = 0


@pytest.mark.parametrize("family,component,layer,position", [
    ("mamba", "h", 0, 9), ("mamba", "h", 1, 10), ("mamba", "h", 0, 13),
    ("pythia", "resid_pre", 1, 9), ("pythia", "resid_pre", 1, 13), ("gpt2", "resid_pre", 1, 10)])
def test_the_gradient_matches_finite_differences_of_the_hook_points_edit(tiny, family, component, layer, position):
    """On Mamba's h the edit is the hook point's (an increment carried by the recurrence), so this
    checks the reverse scan of `scan.LinearScan` behind the estimate."""
    handle = tiny[0][family]
    arch = handle.arch
    ids = {run: handle.as_input(handle.encode(text)) for run, text in (("clean", CLEAN), ("corrupt", CORRUPT))}
    values = {}
    for run in ids:
        hook = arch.hook(handle.module, component, layer, lambda v, run=run: values.__setitem__(run, v.detach().clone()))
        try:
            handle.logits(ids[run])
        finally:
            hook.remove()
    direction = (values["clean"] - values["corrupt"])[:, position]
    a, w = handle.encode(" Mary")[0], handle.encode(" John")[0]

    def metric(eps):
        def edit(v):
            v[:, position] += eps * direction

        hook = arch.hook(handle.module, component, layer, edit)
        try:
            logits = handle.logits(ids["corrupt"])[0, -1]
            return float(logits[a] - logits[w])
        finally:
            hook.remove()

    # central differences: truncation O(eps²), fp32 rounding of the metric ~1e-7 / eps
    eps = 0.05
    fd = (metric(eps) - metric(-eps)) / (2 * eps)
    est = attribution_patch(CLEAN, CORRUPT, model=handle, components=[component], layers=[layer], positions=[position],
                            **KW)
    assert est["estimate"].item() == pytest.approx(fd, rel=5e-3, abs=1e-5)


def spans(monkeypatch):
    """The (first, stop) blocks of each autograd graph attribution_patch runs, as it runs them."""
    seen, rerun = [], attribution.blocks_from

    def spy(handle, first, resid, entry, stop=None):
        seen.append((first, stop))
        return rerun(handle, first, resid, entry, stop=stop)

    monkeypatch.setattr(attribution, "blocks_from", spy)
    return seen


@pytest.mark.parametrize("family,steps,metric", [
    ("mamba", 1, "logit_diff"), ("pythia", 1, "logit_diff"), ("gpt2", 1, "logit_diff"), ("mamba2", 1, "logit_diff"),
    ("granite_hybrid", 1, "logit_diff"), ("mamba", 3, "logit_diff"), ("pythia", 3, "logit_diff"),
    ("mamba", 1, "prob"), ("gpt2", 1, "logit"), ("granite_hybrid", 1, "logprob")])
def test_the_whole_graph_and_the_blockwise_backward_give_the_same_estimates(tiny, monkeypatch, family, steps, metric):
    """A short prompt keeps the whole forward's graph (one span of every block); with the budget
    at 0 the same call runs the backward block by block from the top, and every estimate and
    both metrics agree to fp32 rounding."""
    handle = tiny[0][family]
    L = handle.n_layers
    kw = dict(model=handle, steps=steps, metric=metric, **KW)
    seen = spans(monkeypatch)
    whole = attribution_patch(CLEAN, CORRUPT, **kw)
    assert seen == [(0, L)]
    seen.clear()
    monkeypatch.setattr(attribution, "GRAPH_BUDGET", 0)
    blockwise = attribution_patch(CLEAN, CORRUPT, **kw)
    assert seen == [(layer, layer + 1) for layer in reversed(range(L))]
    ms = {m: (whole.attrs[m][handle.name], blockwise.attrs[m][handle.name]) for m in ("m_clean", "m_corrupt")}
    # fp32 rounding of the two forwards (the blockwise path records the points without autograd,
    # where the models take other kernels), relative to the larger of the metric and the estimates
    scale = max(np.abs(blockwise["estimate"]).max(), *(abs(b) for _, b in ms.values()))
    np.testing.assert_allclose(whole["estimate"], blockwise["estimate"], rtol=0, atol=2e-6 * scale)
    assert (blockwise["estimate"] != 0).any()
    for a, b in ms.values():
        assert a == pytest.approx(b, rel=0, abs=2e-6 * scale)


def test_layers_above_the_lowest_swept_one_are_the_only_ones_differentiated(tiny, monkeypatch):
    handle = tiny[0]["pythia"]
    seen = spans(monkeypatch)
    attribution_patch(CLEAN, CORRUPT, model=handle, layers=[1], **KW)
    assert seen == [(1, handle.n_layers)]


def test_work_that_does_not_fit_even_block_by_block_is_refused_with_its_estimate(tiny, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 4096)
    with pytest.raises(ValueError, match=r"attribution patching of 3 components .* needs about .* shorten the prompts"):
        attribution_patch(CLEAN, CORRUPT, model=tiny[0]["mamba"], **KW)


def test_defaults_are_the_familys_components_from_one_call_for_several_models(tiny):
    handles = [tiny[0]["mamba"], tiny[0]["gpt2"]]
    df = attribution_patch(CLEAN, CORRUPT, model=handles, positions=[9, "all", ()], **KW)
    for handle in handles:
        rows = df[df["model"] == handle.name]
        assert tuple(dict.fromkeys(rows["component"])) == handle.arch.attribution
        assert len(rows) == len(handle.arch.attribution) * handle.n_layers * 3
        # a patch of nothing changes nothing; a patch of every position sums the positions' estimates
        assert (rows.loc[rows["position"] == "none", "estimate"] == 0).all()
        m_clean, m_corrupt = df.attrs["m_clean"][handle.name], df.attrs["m_corrupt"][handle.name]
        np.testing.assert_allclose(rows["recovery"], rows["estimate"] / (m_clean - m_corrupt))
    logits = handles[1].logits(handles[1].encode(CLEAN))[0, -1]
    a, w = handles[1].encode(" Mary")[0], handles[1].encode(" John")[0]
    assert df.attrs["m_clean"][handles[1].name] == pytest.approx((logits[a] - logits[w]).item(), abs=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(components=["pattern"]), "components must be"),
    (dict(components=["q"]), "'q' cannot be estimated"),
    (dict(components=[]), "components must be"),
    (dict(answer=" Mary John"), "answer"),
    (dict(layers=[5]), "layers"),
    (dict(positions=[40]), "positions"),
    (dict(metric="kl"), "metric"),
])
def test_bad_input_is_refused_naming_the_argument(tiny, kwargs, match):
    args = {**KW, **kwargs}
    with pytest.raises(ValueError, match=match):
        attribution_patch(CLEAN, CORRUPT, model=tiny[0]["gpt2"], **args)


@pytest.mark.parametrize("steps", [0, -1, 2.5, True, "4"])
def test_a_bad_steps_is_refused_alike_by_the_api_the_study_spec_and_the_app(tiny, steps):
    """One message, from the signature: the API's, the spec's (naming the entry's field) and the
    Patching tab's check of its steps box."""
    from ui import limits, tab_patching

    words = f"must be an integer ≥ 1, got {steps!r}"
    with pytest.raises(ValueError) as api:
        attribution_patch(CLEAN, CORRUPT, model=tiny[0]["gpt2"], steps=steps, **KW)
    assert str(api.value) == f"steps: {words}"
    entry = {"analysis": "attribution_patch", "corruption": "abc", "steps": steps}
    with pytest.raises(study.SpecError) as spec:
        study_spec.from_mapping({"prompts": [{"id": "natural-00000", "text": CLEAN}], "models": ["m"],
                                 "analyses": [entry]})
    assert str(spec.value) == f"analyses[0].steps: {words}"
    with pytest.raises(limits.InputError) as app:
        tab_patching.check_steps(steps)
    assert str(app.value) == f"steps: {words}"


def test_nothing_is_left_on_the_shared_model(tiny):
    handle = tiny[0]["mamba"]
    attribution_patch(CLEAN, CORRUPT, model=handle, **KW)
    assert all(p.grad is None for p in handle.module.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in handle.module.modules())


def test_frozen_parameters_give_the_same_estimates(tiny):
    handle = identity_norm(tiny[0]["gpt2"])
    before = attribution_patch(CLEAN, CORRUPT, model=handle, **KW)
    handle.module.requires_grad_(False)
    after = attribution_patch(CLEAN, CORRUPT, model=handle, **KW)
    np.testing.assert_allclose(after["estimate"], before["estimate"], rtol=1e-6, atol=1e-9)


def test_the_scatter_puts_each_cell_at_its_exact_change_and_estimate(tiny):
    """One panel per model; each point at (exact change, estimate) of its cell; r in the title
    as numpy computes it from the two sweeps."""
    from compare.figures.attribution import attribution_scatter

    handles = [tiny[0]["mamba"], tiny[0]["pythia"]]
    est = attribution_patch(CLEAN, CORRUPT, model=handles, components=["resid_pre"], steps=4, **KW)
    exact = patch_sweep(CLEAN, CORRUPT, model=handles, component="resid_pre", **KW)
    fig = attribution_scatter(est, exact)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 2
    for ax, handle in zip(panels, handles):
        mine = exact[exact["model"] == handle.name]
        change = mine["metric_patched"].to_numpy() - exact.attrs["m_corrupt"][handle.name]
        estimate = est[est["model"] == handle.name]["estimate"].to_numpy()  # the same (layer, position) order
        np.testing.assert_allclose(ax.collections[0].get_offsets(), np.column_stack([change, estimate]), rtol=1e-6)
        r = np.corrcoef(change, estimate)[0, 1]
        assert ax.get_title() == f"{handle.name} resid_pre: r = {r:.3f}, n = {len(change)}"
    assert "path of 4 steps" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="estimates: no rows of"):
        attribution_scatter(est, patch_sweep(CLEAN, CORRUPT, model=handles[0], component="resid_post", **KW))


def test_the_scatter_refuses_frames_of_other_analyses_naming_the_argument(tiny):
    """The two frames swapped, or a logit_lens frame as `exact`: the argument and the columns it
    lacks, not a KeyError from pandas."""
    from compare.analyses.lens import logit_lens
    from compare.figures.attribution import attribution_scatter

    handle = tiny[0]["gpt2"]
    est = attribution_patch(CLEAN, CORRUPT, model=handle, components=["resid_post"], **KW)
    exact = patch_sweep(CLEAN, CORRUPT, model=handle, component="resid_post", **KW)
    with pytest.raises(ValueError, match="estimates: the frame has no 'estimate' column; pass an attribution_patch"):
        attribution_scatter(exact, est)
    with pytest.raises(ValueError, match="exact: the frame has no 'component', 'metric_patched' columns; pass a "
                                         "patch_sweep frame"):
        attribution_scatter(est, logit_lens(CLEAN, model=handle))


@pytest.mark.parametrize("family,components,steps", [("granite_hybrid", ["resid_post", "h"], 1),
                                                     ("granite_hybrid", ["attn_out", "h"], 2),
                                                     ("nemotron_h", ["mlp_out", "h", "attn_out"], 1)])
def test_components_of_different_layer_kinds_give_each_its_own_layers_as_one_call_each(tiny, family, components, steps):
    """On a hybrid, h is at the SSM layers only, attn_out at the attention layers, mlp_out at the
    MLP layers: one call over several of them has each component's rows at exactly the layers that
    have it, each equal to a call for that component alone."""
    handle = tiny[0][family]
    df = attribution_patch(CLEAN, CORRUPT, model=handle, components=components, steps=steps, **KW)
    for component in components:
        rows = df[df["component"] == component].reset_index(drop=True)
        assert sorted(set(rows["layer"])) == list(handle.arch.layers_with(handle.module, component))
        alone = attribution_patch(CLEAN, CORRUPT, model=handle, components=[component], steps=steps, **KW)
        np.testing.assert_allclose(rows["estimate"], alone["estimate"], rtol=1e-5, atol=1e-7)
        assert rows[["layer", "kind", "position"]].equals(alone[["layer", "kind", "position"]])


@pytest.mark.parametrize("kwargs,match", [
    (dict(components=["h", "mixer_out"], layers=[1]),
     r"layers: layer 1 of granite_hybrid is an attention layer and has none of the components \['h', 'mixer_out'\]; "
     r"the layers that have one: \[0, 2\]"),
    (dict(components=["resid_post", "h"], layers=[1, 3]),
     r"components: 'h' is at none of layers \[1, 3\] of granite_hybrid; it is at layers \[0, 2\]"),
    (dict(components=["h"], layers=[1]), r"layers: layer 1 of granite_hybrid is an attention layer and has no 'h'"),
])
def test_a_hybrid_layer_without_any_of_the_components_is_refused_naming_it(tiny, kwargs, match):
    with pytest.raises(ValueError, match=match):
        attribution_patch(CLEAN, CORRUPT, model=tiny[0]["granite_hybrid"], **KW, **kwargs)
