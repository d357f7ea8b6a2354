"""The Lens tab's callbacks on tiny random models: what it shows equals `compare.logit_lens` on the same
models; Stop shows a note; a bad target is refused before any forward. And `lens_heatmap`: its cells are the
frame's values, its tokens drawn literally."""
from __future__ import annotations

import io

import gradio as gr
import numpy as np
import pandas as pd
import pytest

from compare.analyses.lens import logit_lens
from compare.figures.lens import lens_heatmap
from ui import models

PROMPT = "When Mary and John went to the store , John gave a drink to"


@pytest.fixture(scope="module", autouse=True)
def tiny_sources(tiny_dirs):
    dirs, _ = tiny_dirs
    models.configure(mamba=str(dirs["mamba"]), gpt2=str(dirs["gpt2"]))


def last(stream):
    *_, final = stream
    return final


class Session:
    session_hash = "test-lens"


def image_of(figure, panel: int) -> np.ndarray:
    """The values drawn by a heatmap panel (the image of the panel-th titled axes)."""
    axes = [ax for ax in figure.axes if ax.get_title()]
    return np.asarray(axes[panel].images[0].get_array())


@pytest.mark.parametrize("target,expected", [(" Mary", "Mary"), ("#7", 7), ("", None)])
def test_run_shows_each_models_lens_equal_to_logit_lens(target, expected):
    from ui import tab_lens

    note, top, target_plot, table, files = last(tab_lens.run(PROMPT, target, ["mamba", "gpt2"]))
    assert table["model"].unique().tolist() == ["mamba", "gpt2"]
    for panel, name in enumerate(("mamba", "gpt2")):
        ref = logit_lens(PROMPT, model=models.get(name), target=expected)
        shown = table[table["model"] == name].reset_index(drop=True)
        np.testing.assert_array_equal(shown["target_prob"], ref["target_prob"])
        np.testing.assert_array_equal(shown["kl"], ref["kl"])
        assert shown["top_tokens"].str.split(" | ", regex=False).str[0].tolist() == [t[0] for t in ref["top_tokens"]]
        n_layers, T = ref["layer"].nunique(), ref["position"].nunique()
        grid = ref.sort_values(["layer", "position"])
        np.testing.assert_array_equal(image_of(target_plot, panel),
                                      grid["target_prob"].to_numpy().reshape(n_layers, T))
        np.testing.assert_array_equal(image_of(top, panel),
                                      grid["top_probs"].str[0].to_numpy().reshape(n_layers, T))
    assert {p.rsplit("/", 1)[1] for p in files} == {"lens.csv", "lens.parquet", "lens_top.png", "lens_target.png"}
    assert "Stopped" not in note


def test_csv_holds_the_frame():
    from ui import tab_lens

    *_, files = last(tab_lens.run(PROMPT, " Mary", ["gpt2", "mamba"]))
    csv = pd.read_csv(next(p for p in files if p.endswith(".csv")))
    ref = logit_lens(PROMPT, model=[models.get("gpt2"), models.get("mamba")], target=" Mary")
    np.testing.assert_allclose(csv["target_prob"], ref["target_prob"], rtol=1e-12)
    assert csv["model"].tolist() == ref["model"].tolist()


def test_three_models_side_by_side(tiny_dirs):
    from ui import tab_lens

    dirs, _ = tiny_dirs
    _, top, _, table, _ = last(tab_lens.run(PROMPT, " Mary", ["mamba", "gpt2", str(dirs["pythia"])]))
    assert table["model"].nunique() == 3
    assert len([ax for ax in top.axes if ax.get_title()]) == 3


def test_stop_shows_a_note_and_nothing_else(monkeypatch):
    from ui import jobs, tab_lens

    def stopped_after_first(*args, **kwargs):
        jobs.request_stop(Session, tab_lens.VIEW)  # Stop pressed while the first model runs
        return logit_lens(*args, **kwargs)

    monkeypatch.setattr(tab_lens, "logit_lens", stopped_after_first)
    assert last(tab_lens.run(PROMPT, " Mary", ["mamba", "gpt2"], request=Session)) == (tab_lens.STOPPED,) + (None,) * 4


@pytest.mark.parametrize("target,message", [
    ("Mary John", "target: &#x27;Mary John&#x27; is 2 tokens in mamba"),
    ("#999", r"target must be a one-token string or a token ID in 0\.\.63 for mamba, got 999"),
])
def test_a_bad_target_is_refused_before_any_forward(monkeypatch, target, message):
    from ui import tab_lens

    monkeypatch.setattr(tab_lens, "logit_lens", lambda *a, **k: pytest.fail("a forward ran"))
    with pytest.raises(gr.Error, match=message):
        last(tab_lens.run(PROMPT, target, ["mamba", "gpt2"]))


def test_an_empty_prompt_is_refused():
    from ui import tab_lens

    with pytest.raises(gr.Error, match="prompt is empty"):
        last(tab_lens.run("  ", " Mary", ["mamba", "gpt2"]))


def hand_frame() -> pd.DataFrame:
    """Two layers × two positions of one model, tokens that mathtext would mangle."""
    rows = [("m", layer, p, tok, (top, "b"), (1, 2), (pt, 0.1), "$", pt / 2, 0, 0.1 * layer, 1.0)
            for layer in (0, 1) for p, tok in ((0, "$"), (1, "a_b"))
            for top, pt in [(("$x^2$", "\\alpha")[p], 0.2 + 0.3 * layer + 0.1 * p)]]
    return pd.DataFrame(rows, columns=["model", "layer", "position", "token", "top_tokens", "top_ids", "top_probs",
                                       "target", "target_prob", "target_rank", "kl", "entropy"])


def test_heatmap_cells_are_the_frames_values_and_tokens_are_literal():
    frame = hand_frame()
    figure = lens_heatmap(frame, value="top")
    np.testing.assert_allclose(image_of(figure, 0), [[0.2, 0.3], [0.5, 0.6]])
    ax = [ax for ax in figure.axes if ax.get_title()][0]
    assert [t.get_text() for t in ax.texts] == ["'$x^2$'", "'\\alpha'", "'$x^2$'", "'\\alpha'"]
    assert not any(t.get_parse_math() for t in ax.texts)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["'$'", "'a_b'"]
    figure.savefig(io.BytesIO(), format="png")  # a "$" crashed mathtext
    np.testing.assert_allclose(image_of(lens_heatmap(frame, value="target_prob"), 0), [[0.1, 0.15], [0.25, 0.3]])
    assert ax.get_title() == "m: top-1 token and its P"


def test_heatmap_refuses_an_unknown_value():
    with pytest.raises(ValueError, match="value must be one of top, target_prob, kl, entropy"):
        lens_heatmap(hand_frame(), value="rank")


@pytest.mark.parametrize("value,dropped,missing", [("top", ["top_tokens"], "'top_tokens' column"),
                                                   ("target_prob", ["target"], "'target' column"),
                                                   ("kl", ["token", "kl"], "'token', 'kl' columns")])
def test_heatmap_refuses_a_frame_without_the_columns_it_reads_naming_them(value, dropped, missing):
    """A patch_sweep frame, or a lens frame cut down, handed to the lens heatmap: not a KeyError."""
    with pytest.raises(ValueError, match=f"lens_heatmap: the frame has no {missing}; pass a logit_lens frame"):
        lens_heatmap(hand_frame().drop(columns=dropped), value=value)
