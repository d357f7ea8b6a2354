"""The Patching tab's callbacks on tiny random models: heatmaps and files from one sweep per model, equal to
the one-trace-per-patch reference; Stop keeps the finished layers; attention side by side; bad input."""
from __future__ import annotations

import gradio as gr
import numpy as np
import pytest

from compare.analyses.patching_ref import patch_sweep_ref
from ui import models

pytestmark = pytest.mark.usefixtures("tiny_sources")

from conftest import CLEAN, CORRUPT
RUN = dict(model_a="mamba", model_b="gpt2", clean=CLEAN, corrupt=CORRUPT, answer=" Mary", wrong=" John",
           component_a="h", component_b="z.1", layers="all", metric="logit_diff")


def last(stream):
    *_, final = stream
    return final


class Session:
    session_hash = "test-patching"


def test_run_shows_both_models_side_by_side_equal_to_the_reference():
    from ui import tab_patching

    note, figure, df, files = last(tab_patching.run(**RUN))
    assert df["model"].unique().tolist() == ["mamba", "gpt2"]
    for name, component in (("mamba", "h"), ("gpt2", "z.1")):
        ref = patch_sweep_ref(CLEAN, CORRUPT, model=models.get(name), answer=" Mary", wrong=" John",
                              component=component)
        np.testing.assert_allclose(df[df["model"] == name]["metric_patched"], ref["metric_patched"], atol=1e-5)
    assert [ax.get_title() for ax in figure.axes if ax.get_title()] == ["mamba", "gpt2"]
    assert any(p.endswith("patching.parquet") for p in files) and any(p.endswith("recovery.png") for p in files)
    assert "mamba: logit_diff clean" in note and "Stopped" not in note


def test_progress_counts_the_runs_of_both_models():
    from ui import tab_patching

    seen = []
    last(tab_patching.run(**RUN, progress=lambda value, **kw: seen.append(value)))
    assert seen[0] == (0, 56) and seen[-1] == (56, 56)  # 2 layers × 14 positions, each model


def test_stop_keeps_the_layers_finished(monkeypatch):
    from compare.analyses.patching import patch_sweep

    from ui import jobs, tab_patching

    def stopped_after_first(*args, progress, stop, **kwargs):
        def report(done, total):
            progress(done, total)
            jobs.request_stop(Session, tab_patching.VIEW)  # Stop pressed once the first position is done
        return patch_sweep(*args, progress=report, stop=stop, **kwargs)

    monkeypatch.setattr(tab_patching, "patch_sweep", stopped_after_first)
    note, figure, df, files = last(tab_patching.run(**RUN, request=Session))
    assert "Stopped" in note
    assert df["model"].unique().tolist() == ["mamba"] and df["position"].unique().tolist() == [0]
    assert any(p.endswith("patching_partial.csv") for p in files)


def test_pairs_are_the_built_natural_splits_rows_with_both_corruptions():
    """"natural i" is row i of the natural split `datasets_gen.build(seed=0)` writes (real
    tokenizers), its abc corruption that row's `corrupt_abc`, whose third name is a random draw."""
    from conftest import shared_tokenizer
    from datasets_gen import build
    from ui import tab_patching

    labels = list(tab_patching.PAIRS)
    assert len(labels) == 2 * tab_patching.SUITE_PROMPTS
    assert tab_patching.pick_pair(labels[0])[::2] == ("When Mary and John went to the store, John gave a drink to",
                                                      " Mary")
    assert tab_patching.pick_pair(labels[1])[1] == "When Mary and John went to the store, Mary gave a drink to"
    tokenizers = {"mamba": shared_tokenizer("gpt-neox-20b"), "gpt2": shared_tokenizer("gpt2")}
    rows = build(seed=0, suites=["natural"], tokenizers=tokenizers)["natural"].to_list()[:tab_patching.SUITE_PROMPTS]
    expected = [((r["text"], r["corrupt_abc"], r["answer"], r["wrong"]),
                 (r["text"], r["corrupt_name_swap"], r["answer"], r["wrong"])) for r in rows]
    assert [(tab_patching.pick_pair(a), tab_patching.pick_pair(b)) for a, b in zip(labels[::2], labels[1::2])] == expected


def test_attention_shows_hidden_attention_beside_the_pattern():
    from ui import tab_patching

    figure = tab_patching.attention("mamba", "gpt2", CLEAN, 1, 0)
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert titles == ["mamba layer 1: hidden attention (mean)", "gpt2 layer 0: pattern (mean)"]


def test_component_choices_follow_the_family():
    from ui import tab_patching

    assert "h" in tab_patching.components("mamba") and "pattern" not in tab_patching.components("gpt2")


def test_metric_choices_are_the_signatures_of_both_modes():
    from compare.analyses.signatures import ATTRIBUTION_PATCH, PATCH_SWEEP
    from ui import tab_patching

    with gr.Blocks() as demo:
        tab_patching.build({})
    (radio,) = [b for b in demo.blocks.values() if b.elem_id == "patching-metric"]
    offered = [value for _, value in radio.choices]
    assert offered == ["logit_diff", "logit", "prob", "logprob"]  # the four `patching.metric_of` computes
    for signature in (PATCH_SWEEP, ATTRIBUTION_PATCH):  # mode exact runs patch_sweep, estimate attribution_patch
        assert tuple(offered) == signature["metric"].choices and radio.value == signature["metric"].default


@pytest.mark.parametrize("change,message", [
    (dict(corrupt="When Mary and John went to the store , John gave a drink"), "same number of tokens"),
    (dict(component_b="pattern"), "cannot be patched"),
    (dict(layers="7"), r"0\.\.1"),
    (dict(answer=" Mary Mary"), "2 tokens"),
    (dict(clean=""), "prompt is empty"),
])
def test_bad_input_is_a_readable_error_before_any_sweep(change, message):
    from ui import tab_patching

    with pytest.raises(gr.Error, match=message):
        last(tab_patching.run(**{**RUN, **change}))


ESTIMATE = {**RUN, "component_b": "resid_post", "mode": "estimate"}


def test_estimate_mode_shows_attribution_patchings_estimate_said_to_be_first_order():
    from compare.analyses.attribution import attribution_patch
    from ui import tab_patching

    note, figure, df, files = last(tab_patching.run(**ESTIMATE))
    for name, component in (("mamba", "h"), ("gpt2", "resid_post")):
        ref = attribution_patch(CLEAN, CORRUPT, model=models.get(name), answer=" Mary", wrong=" John",
                                components=[component])
        shown = df[df["model"] == name].reset_index(drop=True)
        np.testing.assert_array_equal(shown["estimate"], ref["estimate"])
        np.testing.assert_array_equal(shown["recovery"], ref["recovery"])
        axes = [ax for ax in figure.axes if ax.get_title() == name]
        grid = ref.pivot(index="layer", columns="position", values="recovery").to_numpy()
        np.testing.assert_array_equal(np.asarray(axes[0].images[0].get_array()), grid)
    assert figure.get_suptitle().startswith("first-order estimate (attribution patching)")
    assert "First-order estimate" in note and "mamba: logit_diff clean" in note
    assert any(p.endswith("attribution.csv") for p in files)


def test_estimate_mode_stopped_between_models_keeps_the_first(monkeypatch):
    from compare.analyses.attribution import attribution_patch

    from ui import jobs, tab_patching

    def stopped_after_first(*args, **kwargs):
        jobs.request_stop(Session, tab_patching.VIEW)
        return attribution_patch(*args, **kwargs)

    monkeypatch.setattr(tab_patching, "attribution_patch", stopped_after_first)
    note, figure, df, files = last(tab_patching.run(**ESTIMATE, request=Session))
    assert df["model"].unique().tolist() == ["mamba"] and "Stopped" in note


def test_an_unknown_mode_is_refused():
    from ui import tab_patching

    with pytest.raises(gr.Error, match="mode must be one of exact, estimate"):
        last(tab_patching.run(**{**RUN, "mode": "fast"}))


def test_the_note_and_heatmap_name_each_layers_kind_of_a_hybrid(tiny_dirs, tiny):
    from ui import tab_patching

    granite = str(tiny_dirs[0]["granite_hybrid"])
    # Granite's config layer_types (transformers 5 writes "mamba" / "attention" as linear / full attention)
    kinds = [{"linear_attention": "ssm", "full_attention": "attention"}[t]
             for t in tiny[1]["granite_hybrid"].config.layer_types]
    note, figure, df, _ = last(tab_patching.run(**{**RUN, "model_a": granite, "component_a": "resid_post"}))
    assert "granite_hybrid layers: " + ", ".join(f"{l} {k}" for l, k in enumerate(kinds)) in note
    assert "gpt2: every layer swept is attention" in note
    # recovery_by_kind: each heatmap beside a strip of its layers, ticked and coloured by kind
    assert [ax.get_title() for ax in figure.axes if ax.get_title()] == ["granite_hybrid", "gpt2"]
    strips = [ax for ax in figure.axes if ax.get_ylabel() == "layer · kind"]
    ticks = [[t.get_text() for t in ax.get_yticklabels()] for ax in strips]
    assert ticks == [[f"{l} · {k}" for l, k in enumerate(kinds)], ["0 · attention", "1 · attention"]]
    colours = [np.asarray(ax.images[0].get_array()).ravel().tolist() for ax in strips]
    legend = [t.get_text() for t in figure.legends[0].get_texts()]  # one colour index per kind, sorted
    assert colours == [[legend.index(k) for k in kinds], [legend.index("attention")] * 2]


def test_estimate_mode_passes_the_steps_box_to_attribution_patch():
    from compare.analyses.attribution import attribution_patch
    from ui import tab_patching

    note, figure, df, files = last(tab_patching.run(**{**ESTIMATE, "steps": 4.0}))  # a gr.Number sends a float
    for name, component in (("mamba", "h"), ("gpt2", "resid_post")):
        ref = attribution_patch(CLEAN, CORRUPT, model=models.get(name), answer=" Mary", wrong=" John",
                                components=[component], steps=4)
        np.testing.assert_array_equal(df[df["model"] == name]["estimate"].to_numpy(), ref["estimate"].to_numpy())
    assert "steps = 4" in note and "path of 4 steps" in figure.get_suptitle()


@pytest.mark.parametrize("steps", [0, 2.5, None])
def test_a_bad_steps_box_is_refused_in_estimate_mode_only(steps):
    from ui import tab_patching

    with pytest.raises(gr.Error, match="steps"):
        last(tab_patching.run(**{**ESTIMATE, "steps": steps}))
    note, *_ = last(tab_patching.run(**{**RUN, "layers": "0", "steps": steps}))  # exact mode does not read it
    assert "logit_diff clean" in note
