"""Figures: pure functions of arrays/DataFrames, one titled panel per model, tokens drawn literally."""
import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib import font_manager
from matplotlib.figure import Figure

from compare.figures import base as figures
from conftest import HOSTILE, assert_literal, renders

matplotlib.use("Agg")
MODELS = ("mamba", "gpt2")
CJK = ("日本語", "中文")


def panels(fig):
    return [ax for ax in fig.axes if ax.get_title()]


def system_font(filename):
    return any(path.endswith(filename) for path in font_manager.findSystemFonts())


def no_missing_glyphs(fig):
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*missing from font", category=UserWarning)
        return renders(fig)


@pytest.fixture
def K():
    rng = np.random.default_rng(0)
    return {m: rng.normal(size=(4, 50)) for m in MODELS}


def hostile_k():
    rng = np.random.default_rng(1)
    return {m: rng.normal(size=(len(HOSTILE), 30)) for m in MODELS}


def tracked(models=MODELS, labels=(" Mary",), positions=3, K=lambda t: 2.0):
    return pd.DataFrame([{"model": m, "tracked": label, "position": t, "L": 1.0 * t, "K": K(t), "P": 0.1}
                         for m in models for label in labels for t in range(positions)])


def top_k(tokens=("x", "x"), candidate="y", p=0.5):
    return pd.DataFrame([{"model": m, "position": t, "token": tok, "rank": r, "candidate": candidate, "p": p}
                         for m in MODELS for t, tok in enumerate(tokens) for r in (1, 2, 3)])


def lock_frame(tokens=("a", "b", "a", "b", "a", "b")):
    return pd.DataFrame([{"model": m, "position": t, "token": tok, "P_next": min(1.0, 0.1 + 0.2 * t)}
                         for m in MODELS for t, tok in enumerate(tokens)])


# ---- the figures and their panels


def test_k_distributions_has_a_labelled_panel_per_model(K):
    fig = figures.k_distributions(K, {m: ["a", "b", "c", "d"] for m in MODELS})
    assert isinstance(fig, Figure) and fig.get_suptitle()
    assert [ax.get_title() for ax in panels(fig)] == list(MODELS)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["0: 'a'", "1: 'b'", "2: 'c'", "3: 'd'"]
    assert renders(fig)


def test_trajectories_has_l_k_p_rows_per_model():
    fig = figures.trajectories(tracked())
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
    fig = figures.top_k_table(top_k())
    table = fig.axes[0].tables[0]
    assert table[0, 0].get_text().get_text() == "top 1"
    assert table[1, 2].get_text().get_text() == "'y' 0.5"
    assert renders(fig)


def test_cross_model_reports_the_agreement_rate():
    frame = pd.DataFrame({"model": "mamba", "other": "gpt2", "position": [0, 1, 2, 3], "js": [0.1, 0.2, 0.3, 0.4],
                          "agree": [True, False, False, False], "split": [False, True, False, False]})
    fig = figures.cross_model(frame)
    assert fig.axes[0].get_title() == "mamba vs gpt2: agreement 25%"
    assert renders(fig)


# ---- tokens are data (rule 19): literal text, every figure renders


def test_token_label_is_the_token_itself_quoted():
    assert [figures.token_label(t) for t in HOSTILE] == [f"'{t}'" for t in HOSTILE]


def test_token_label_shows_line_breaks_and_tabs_as_symbols():
    assert figures.token_label("\n\t a\r") == "'↵⇥ a␍'"


def test_token_label_escapes_c1_controls_which_no_font_draws():
    """U+0080–U+009F (a byte-level BPE token decoded from Latin-1 text): an empty box otherwise."""
    assert figures.token_label("a\x85b\x9f") == "'a\\x85b\\x9f'"
    assert figures.token_label("\xa0é") == "'\xa0é'"  # printable Latin-1 stays literal


def test_k_distributions_draw_hostile_tokens_literally():
    fig = figures.k_distributions(hostile_k(), {m: list(HOSTILE) for m in MODELS})
    assert renders(fig)
    assert_literal(fig, [f"{t}: '{tok}'" for t, tok in enumerate(HOSTILE)])


def test_top_k_table_with_a_dollar_token_saves_and_shows_it_literally():
    fig = figures.top_k_table(top_k(tokens=("$$", "$"), candidate="a_b^c"))
    assert renders(fig)
    assert_literal(fig, ["0: '$$'", "1: '$'", "'a_b^c' 0.5"])


@pytest.mark.parametrize("token", HOSTILE)
def test_top_k_table_draws_each_hostile_token_literally(token):
    fig = figures.top_k_table(top_k(tokens=(token, "x"), candidate=token))
    assert renders(fig)
    assert_literal(fig, [f"0: '{token}'", f"'{token}' 0.5"])


def test_trajectories_draw_hostile_tracked_tokens_and_inputs_literally():
    frame = tracked(labels=HOSTILE[:4], positions=len(HOSTILE))
    fig = figures.trajectories(frame, tokens={m: list(HOSTILE) for m in MODELS})
    assert renders(fig)
    assert_literal(fig, list(HOSTILE[:4]) + [f"{t}: '{tok}'" for t, tok in enumerate(HOSTILE)])


def test_flattened_logits_label_positions_with_literal_tokens():
    fig = figures.flattened_logits(hostile_k(), tokens={m: list(HOSTILE) for m in MODELS})
    assert renders(fig)
    assert_literal(fig, [f"{t}: '{tok}'" for t, tok in enumerate(HOSTILE)])


def test_model_names_are_literal_too():
    table = pd.DataFrame({"id": [0, 1, 2], "length": [1, 2, 2]})
    fig = figures.tokenizer_scatter({"my$model": table, "a_b^c": table})
    assert renders(fig)
    cross = pd.DataFrame({"model": "$m$", "other": "o$", "position": [0, 1], "js": [0.1, 0.2],
                          "agree": [True, False], "split": [False, False]})
    fig = figures.cross_model(cross)
    assert renders(fig)
    assert_literal(fig, ["$m$ vs o$: agreement 50%", "position ($m$)"])


def test_pattern_lock_in_draws_hostile_tokens_literally():
    fig = figures.pattern_lock_in(lock_frame(tokens=HOSTILE), lock_in={"mamba": 3, "gpt2": None})
    assert renders(fig)
    assert_literal(fig, [f"{t}: '{tok}'" for t, tok in enumerate(HOSTILE)])


# ---- glyphs: CJK and emoji render through font fallback where the fonts are installed


def test_fallback_lists_the_cjk_font_when_its_file_is_installed():
    if not system_font(figures.CJK_FONT_FILE):
        pytest.skip(f"{figures.CJK_FONT_FILE} not installed (Debian: fonts-noto-cjk, see .ci/browser-setup.sh)")
    assert figures.CJK_FONT in figures.fallback_fonts()


def test_data_text_falls_back_to_the_installed_fonts(K):
    fig = figures.k_distributions(K, {m: ["a", "b", "c", "d"] for m in MODELS})
    label = fig.axes[0].get_yticklabels()[0]
    assert label.get_fontfamily()[1:] == list(figures.fallback_fonts())


def test_cjk_tokens_render_without_missing_glyphs():
    if not system_font(figures.CJK_FONT_FILE):
        pytest.skip(f"{figures.CJK_FONT_FILE} not installed (Debian: fonts-noto-cjk, see .ci/browser-setup.sh)")
    k = {m: np.random.default_rng(0).normal(size=(len(CJK), 20)) for m in MODELS}
    assert no_missing_glyphs(figures.k_distributions(k, {m: list(CJK) for m in MODELS}))
    assert no_missing_glyphs(figures.top_k_table(top_k(tokens=CJK, candidate="語")))


def test_emoji_render_without_missing_glyphs():
    if not system_font(figures.EMOJI_FONT_FILE):
        pytest.skip(f"{figures.EMOJI_FONT_FILE} not installed (Debian: fonts-symbola, see .ci/browser-setup.sh)")
    assert no_missing_glyphs(figures.top_k_table(top_k(tokens=("🐍", "👨‍👩‍👧"), candidate="🐍")))


# ---- readability


def test_suptitle_sits_above_the_panel_titles_below_a_top_margin(K):
    fig = figures.k_distributions(K, {m: ["a", "b", "c", "d"] for m in MODELS})
    fig.draw_without_rendering()
    suptitle = next(t for t in fig.texts if t.get_text() == fig.get_suptitle()).get_window_extent()
    titles = [ax.title.get_window_extent() for ax in panels(fig)]
    assert suptitle.y0 >= max(t.y1 for t in titles)
    assert fig.bbox.height - suptitle.y1 >= 0.9 * figures.TOP_MARGIN * fig.dpi


@pytest.mark.parametrize("scale", ["linear", "symlog", "log"])
def test_trajectories_put_k_on_the_scale_asked_for(scale):
    fig = figures.trajectories(tracked(), k_scale=scale)
    assert [ax.get_yscale() for ax in fig.axes if ax.get_ylabel() == "K"] == [scale, scale]
    assert renders(fig)


def test_trajectories_default_to_symlog_when_k_spans_orders_of_magnitude():
    wide = figures.trajectories(tracked(K=lambda t: 10.0 ** (2 * t + 1)))  # 10 … 1e5
    narrow = figures.trajectories(tracked(K=lambda t: 1.0 + t))
    assert {ax.get_yscale() for ax in wide.axes if ax.get_ylabel() == "K"} == {"symlog"}
    assert {ax.get_yscale() for ax in narrow.axes if ax.get_ylabel() == "K"} == {"linear"}


def test_k_scale_is_validated():
    with pytest.raises(ValueError, match="k_scale.*'linear', 'symlog', 'log'"):
        figures.trajectories(tracked(), k_scale="loglog")


@pytest.mark.parametrize("scale", ["linear", "symlog", "log"])
def test_k_distributions_put_k_on_the_scale_asked_for(scale):
    k = {m: np.abs(np.random.default_rng(0).normal(size=(3, 40))) * 10.0 ** np.arange(3)[:, None] for m in MODELS}
    fig = figures.k_distributions(k, {m: ["a", "b", "c"] for m in MODELS}, k_scale=scale)
    assert [ax.get_xscale() for ax in panels(fig)] == [scale, scale]
    assert renders(fig)


def test_trajectories_label_positions_with_their_tokens():
    fig = figures.trajectories(tracked(), tokens={m: ["When", " Mary", " and"] for m in MODELS})
    labels = [t.get_text() for t in fig.axes[-1].get_xticklabels()]
    assert labels == ["0: 'When'", "1: ' Mary'", "2: ' and'"]


def test_many_positions_are_thinned_to_at_most_max_ticks():
    n = 3 * figures.MAX_TICKS
    fig = figures.trajectories(tracked(positions=n), tokens={m: [f"t{i}" for i in range(n)] for m in MODELS})
    labels = [t.get_text() for t in fig.axes[-1].get_xticklabels()]
    assert 2 <= len(labels) <= figures.MAX_TICKS and labels[0] == "0: 't0'"


def test_trajectories_grow_with_positions_and_give_each_row_room():
    short, long = figures.trajectories(tracked(positions=3)), figures.trajectories(tracked(positions=60))
    assert long.get_figwidth() > short.get_figwidth()
    assert short.get_figheight() >= 3 * 2.4


@pytest.mark.parametrize("p, text", [(0.5, "0.5"), (0.123456, "0.123"), (0.0123, "0.0123"),
                                     (0.0002, "2.00e-04"), (2.346e-7, "2.35e-07"), (1.0, "1"), (0.0, "0")])
def test_probabilities_keep_three_significant_digits(p, text):
    assert figures.p_label(p) == text


def test_top_k_table_shows_small_p_in_scientific_notation():
    fig = figures.top_k_table(top_k(p=0.0002))
    assert fig.axes[0].tables[0][1, 0].get_text().get_text() == "'y' 2.00e-04"


# ---- the Patterns view


def test_pattern_lock_in_plots_p_next_per_model_and_marks_lock_in():
    frame = lock_frame()
    fig = figures.pattern_lock_in(frame, lock_in={"mamba": 3, "gpt2": None})
    mamba, gpt2 = panels(fig)
    assert mamba.get_title() == "mamba: locks in at position 3"
    assert gpt2.get_title() == "gpt2: no lock-in"
    np.testing.assert_allclose(mamba.lines[0].get_ydata(), frame[frame["model"] == "mamba"]["P_next"])
    assert [list(line.get_xdata()) for line in mamba.lines[1:]] == [[3, 3]]
    assert len(gpt2.lines) == 1
    assert [t.get_text() for t in mamba.get_xticklabels()][:2] == ["0: 'a'", "1: 'b'"]
    assert renders(fig)


def test_pattern_lock_in_labels_the_positions_given():
    fig = figures.pattern_lock_in(lock_frame().assign(position=lambda f: f["position"] + 10))
    assert [t.get_text() for t in panels(fig)[0].get_xticklabels()][:2] == ["10: 'a'", "11: 'b'"]


def test_pattern_lock_in_without_lock_in_only_draws_the_curves():
    fig = figures.pattern_lock_in(lock_frame())
    assert [len(ax.lines) for ax in panels(fig)] == [1, 1]


def test_pattern_lock_in_names_missing_columns():
    with pytest.raises(ValueError, match="P_next"):
        figures.pattern_lock_in(lock_frame().drop(columns="P_next"))


# ---- long prompts: per-position rows thinned, the data untouched

LONG = 200  # > MAX_ROWS = 64: one in ceil(199 / 63) = 4 positions (0, 4, …, 196) and the last, 199
LONG_ROWS = [*range(0, 197, 4), 199]


def test_row_positions_keep_every_position_up_to_max_rows_then_one_in_n_and_the_last():
    assert figures.row_positions(64) == list(range(64))
    assert figures.row_positions(LONG) == LONG_ROWS and len(LONG_ROWS) == 51
    assert figures.row_positions(1020)[-2:] == [1003, 1019] and len(figures.row_positions(1020)) == 61  # one in 17


def test_a_long_prompts_ridgeline_draws_the_thinned_rows_and_says_so():
    rng = np.random.default_rng(2)
    tokens = {m: [f"w{t}" for t in range(LONG)] for m in MODELS}
    fig = figures.k_distributions({m: rng.normal(size=(LONG, 30)) for m in MODELS}, tokens)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == [f"{t}: 'w{t}'" for t in LONG_ROWS]
    assert "(51 of 200 positions: one in 4 and the last)" in fig._suptitle.get_text()
    assert fig.get_size_inches()[1] < 0.45 * 52 + 1  # not 0.45 inches for each of the 200 positions


def test_a_long_prompts_top_k_table_shows_the_thinned_rows_and_says_so():
    fig = figures.top_k_table(top_k(tokens=[f"w{t}" for t in range(LONG)]))
    rows = [cell.get_text().get_text() for (r, c), cell in fig.axes[0].tables[0].get_celld().items() if c == -1]
    assert rows == [f"{t}: 'w{t}'" for t in LONG_ROWS]
    assert "(51 of 200 positions: one in 4 and the last)" in fig._suptitle.get_text()
