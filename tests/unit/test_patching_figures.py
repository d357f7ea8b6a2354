"""Patching heatmaps: a panel with nothing finite to show says why instead of staying blank."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from compare.analyses.patching import patch_sweep
from compare.figures.patching import recovery_heatmaps, trace_heatmaps

CLEAN = "When Mary and John went to the store , John gave a drink to"
CORRUPT = "When Mary and John went to the store , Mary gave a drink to"
KW = dict(answer=" Mary", wrong=" John", component="resid_post", layers=[0, 1], positions=[1, 3])


def _sweep(clean, corrupt, model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # identical prompts warn; test_patching checks that
        return patch_sweep(clean, corrupt, model=model, **KW)


def test_identical_prompts_give_a_heatmap_that_says_recovery_is_undefined(tiny):
    fig = recovery_heatmaps(_sweep(CLEAN, CLEAN, tiny[0]["gpt2"]))
    ax = fig.axes[0]
    assert np.ma.getmaskarray(ax.images[0].get_array()).all()  # every cell NaN: masked, drawn blank
    assert [t.get_text() for t in ax.texts] == ["clean and corrupt prompts are identical:\nrecovery is undefined (0/0)"]


def test_only_the_panel_of_the_model_whose_runs_agree_carries_the_note(tiny):
    same = _sweep(CLEAN, CLEAN, tiny[0]["gpt2"])
    differ = _sweep(CLEAN, CORRUPT, tiny[0]["mamba"])
    df = pd.concat([differ, same], ignore_index=True)
    df.attrs = {key: {**differ.attrs[key], **same.attrs[key]} if isinstance(differ.attrs[key], dict)
                else differ.attrs[key] for key in differ.attrs}
    fig = recovery_heatmaps(df)
    by_title = {ax.get_title(): ax for ax in fig.axes}
    assert not by_title[tiny[0]["mamba"].name].texts
    assert "identical" in by_title[tiny[0]["gpt2"].name].texts[0].get_text()


def test_runs_that_agree_without_identical_prompts_name_the_equal_metrics():
    df = pd.DataFrame({"model": "m", "layer": [0, 1], "position": [0, 0], "component": "h",
                       "metric_patched": [0.5, 0.5], "recovery": [np.nan, np.nan]})
    df.attrs.update(m_clean={"m": 0.5}, m_corrupt={"m": 0.5}, tokens={"m": ["a"]}, corrupt_tokens={"m": ["b"]})
    texts = [t.get_text() for t in recovery_heatmaps(df).axes[0].texts]
    assert texts == ["clean and corrupt runs agree (m_clean = m_corrupt = 0.5):\nrecovery is undefined (0/0)"]


def test_a_blank_trace_heatmap_says_so():
    df = pd.DataFrame({"model": "m", "layer": [0], "position": [0], "token": ["a"], "component": "h",
                       "p_restored": [np.nan], "indirect_effect": [np.nan]})
    assert [t.get_text() for t in trace_heatmaps(df).axes[0].texts] == ["no finite indirect effect to show"]


def test_heatmap_layer_ticks_are_the_integer_layers(tiny):
    ax = recovery_heatmaps(_sweep(CLEAN, CORRUPT, tiny[0]["gpt2"])).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1"]
    assert not ax.texts


def test_a_hybrids_layer_ticks_name_each_layers_kind(tiny):
    handle = tiny[0]["granite_hybrid"]
    # the config's layer_types (transformers 5 writes Granite's "mamba" / "attention" as linear / full attention)
    kinds = {"mamba": "ssm", "linear_attention": "ssm", "attention": "attention", "full_attention": "attention"}
    layer_types = tiny[1]["granite_hybrid"].config.layer_types
    df = patch_sweep(CLEAN, CORRUPT, model=handle, **{**KW, "layers": None})
    ax = recovery_heatmaps(df).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"{l} · {kinds[t]}" for l, t in enumerate(layer_types)]


def test_a_frame_of_another_analysis_is_refused_naming_the_columns_it_lacks(tiny):
    """A logit_lens frame (no position-wise recovery, no component) handed to each heatmap."""
    import pytest
    from compare.analyses.lens import logit_lens
    from compare.figures.patching import recovery_by_kind

    lens = logit_lens(CLEAN, model=tiny[0]["granite_hybrid"])
    for figure, missing in ((recovery_heatmaps, "'component', 'recovery' columns; pass a patch_sweep or "
                                                "attribution_patch frame"),
                            (recovery_by_kind, "'component', 'recovery' columns; pass a patch_sweep"),
                            (trace_heatmaps, "'component', 'indirect_effect' columns; pass a causal_trace frame")):
        with pytest.raises(ValueError, match=f"{figure.__name__}: the frame has no {missing}"):
            figure(lens)


def test_recovery_by_kind_refuses_rows_without_a_kind_naming_the_layer(tiny):
    import pytest
    from compare.figures.patching import recovery_by_kind

    df = _sweep(CLEAN, CORRUPT, tiny[0]["granite_hybrid"])
    df.loc[df["layer"] == 1, "kind"] = None
    with pytest.raises(ValueError, match="recovery_by_kind: the 'kind' column is empty at layer 1 of granite_hybrid"):
        recovery_by_kind(df)
