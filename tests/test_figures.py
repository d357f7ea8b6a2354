"""Figures: pure functions of arrays/DataFrames, one titled panel per model."""
import io

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from compare import figures

matplotlib.use("Agg")
MODELS = ("mamba", "gpt2")


def panels(fig):
    return [ax for ax in fig.axes if ax.get_title()]


def renders(fig):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue().startswith(b"\x89PNG")


@pytest.fixture
def K():
    rng = np.random.default_rng(0)
    return {m: rng.normal(size=(4, 50)) for m in MODELS}


def test_k_distributions_has_a_labelled_panel_per_model(K):
    fig = figures.k_distributions(K, {m: ["a", "b", "c", "d"] for m in MODELS})
    assert isinstance(fig, Figure) and fig.get_suptitle()
    assert [ax.get_title() for ax in panels(fig)] == list(MODELS)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["0: 'a'", "1: 'b'", "2: 'c'", "3: 'd'"]
    assert renders(fig)


def test_trajectories_has_l_k_p_rows_per_model():
    frame = pd.DataFrame([{"model": m, "tracked": " Mary", "position": t, "L": 1.0 * t, "K": 2.0, "P": 0.1}
                          for m in MODELS for t in range(3)])
    fig = figures.trajectories(frame)
    assert len(fig.axes) == 6 and fig.get_suptitle()
    assert {ax.get_ylabel() for ax in fig.axes} == {"L", "K", "P"}
    assert renders(fig)


def test_flattened_logits_plots_every_entry(K):
    fig = figures.flattened_logits(K)
    line = fig.axes[0].lines[0]
    np.testing.assert_array_equal(line.get_ydata(), K["mamba"].ravel())
    assert renders(fig)


def test_tokenizer_scatter_states_r_in_the_title():
    table = pd.DataFrame({"id": [0, 1, 2, 3], "length": [1, 2, 2, 4]})
    fig = figures.tokenizer_scatter({"gpt2": table})
    r = np.corrcoef([0, 1, 2, 3], [1, 2, 2, 4])[0, 1]
    assert f"r = {r:.3f}" in fig.axes[0].get_title()
    assert renders(fig)


def test_top_k_table_has_a_cell_per_rank_and_position():
    frame = pd.DataFrame([{"model": m, "position": t, "token": "x", "rank": r, "candidate": "y", "p": 0.5}
                          for m in MODELS for t in range(2) for r in (1, 2, 3)])
    fig = figures.top_k_table(frame)
    table = fig.axes[0].tables[0]
    assert table[0, 0].get_text().get_text() == "top 1"
    assert table[1, 2].get_text().get_text() == "'y' 0.50"
    assert renders(fig)


def test_cross_model_reports_the_agreement_rate():
    frame = pd.DataFrame({"model": "mamba", "other": "gpt2", "position": [0, 1, 2, 3], "js": [0.1, 0.2, 0.3, 0.4],
                          "agree": [True, False, False, False], "split": [False, True, False, False]})
    fig = figures.cross_model(frame)
    assert fig.axes[0].get_title() == "mamba vs gpt2: agreement 25%"
    assert renders(fig)
