"""Noise figures: synthetic frames in, a Figure with the expected panels and artists out."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from compare.figures import noise as nf
from conftest import renders

LEVELS = np.linspace(0, 1, 11)


def sweep_frame(models=("mamba", "gpt2"), layers=(0, 1, 2), component="h"):
    rows = [{"model": m, "layer": l, "component": component, "level": v, "trial": 0,
             "hit": v < 0.3 + 0.2 * l, "p_target": max(0.0, 0.9 - v)}
            for m in models for l in layers for v in LEVELS]
    return pd.DataFrame(rows)


def fits_frame():
    return pd.DataFrame({"model": "mamba", "layer": [0, 1, 2], "component": "h",
                         "critical_level": [0.3, 0.5, np.inf], "ci_low": [0.25, 0.45, np.nan],
                         "ci_high": [0.35, 0.55, np.nan], "width": [0.1, 0.1, np.nan],
                         "status": ["fit", "fit", "always_hit"], "n": 11})


def test_hit_curves_draw_one_panel_per_layer_with_the_fit():
    fig = nf.hit_curves(sweep_frame(models=("mamba",)), fits_frame(), layers=[0, 2])
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    fitted, unfitted = fig.axes
    assert len(fitted.lines) == 3  # p_target, fitted curve, critical level
    assert len(unfitted.lines) == 1  # "always_hit": no curve to draw


def test_hit_curves_pick_a_few_layers_by_default():
    fig = nf.hit_curves(sweep_frame(layers=tuple(range(24))), max_panels=4)
    assert [ax.get_title() for ax in fig.axes] == ["layer 0", "layer 8", "layer 15", "layer 23"]


def test_heatmap_has_one_panel_per_model_and_a_colourbar():
    fig = nf.hit_heatmap(sweep_frame())
    assert [ax.get_title() for ax in fig.axes[:2]] == ["mamba", "gpt2"]
    mesh = fig.axes[0].collections[0]
    assert mesh.get_array().reshape(3, len(LEVELS))[0, 0] == 1.0  # layer 0, level 0: a hit
    assert len(fig.axes) == 3


def test_critical_levels_plot_one_line_per_model_and_component():
    fits = pd.concat([fits_frame(), fits_frame().assign(component="x")])
    ax = nf.critical_levels(fits).axes[0]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["mamba h", "mamba x"]
    assert len(ax.containers) == 2
    data_line = ax.containers[0].lines[0]
    np.testing.assert_array_equal(data_line.get_ydata(), [0.3, 0.5])  # the unfitted layer is left out


def test_noisy_logits_one_panel_per_layer():
    df = pd.DataFrame([{"layer": l, "run": r, "token_id": t, "logit": float(t)}
                       for l in (0, 23) for r in ("clean", "noisy") for t in range(5)])
    fig = nf.noisy_logits(df, target=2)
    assert [ax.get_title() for ax in fig.axes] == ["noise at layer 0", "noise at layer 23"]
    assert len(fig.axes[0].lines) == 3


@pytest.mark.parametrize("top", [3, 10])
def test_channel_bars_show_the_top_channels(top):
    df = pd.DataFrame({"axis": "channel", "channel": range(10), "flip_rate": np.linspace(1, 0, 10),
                       "rank": range(1, 11)})
    ax = nf.channel_bars(df, top=top).axes[0]
    assert len(ax.patches) == top
    assert max(p.get_width() for p in ax.patches) == 1.0


def test_critical_levels_without_any_fit_is_an_empty_plot():
    ax = nf.critical_levels(fits_frame().assign(status="always_hit")).axes[0]
    assert not ax.containers and ax.get_legend() is None


def test_hit_curves_shade_the_critical_level_ci():
    fig = nf.hit_curves(sweep_frame(models=("mamba",)), fits_frame(), layers=[1])
    (band,) = fig.axes[0].patches
    x0, x1 = band.get_x(), band.get_x() + band.get_width()
    assert (x0, x1) == pytest.approx((0.45, 0.55))
    assert [list(line.get_xdata()) for line in fig.axes[0].lines if line.get_linestyle() == ":"] == [[0.5, 0.5]]


def test_hit_curves_without_a_ci_draw_the_line_only():
    fits = fits_frame().assign(ci_low=np.nan, ci_high=np.nan)
    fig = nf.hit_curves(sweep_frame(models=("mamba",)), fits, layers=[1])
    assert not fig.axes[0].patches and len(fig.axes[0].lines) == 3


def test_hit_curves_keep_an_explicit_layer_list_in_its_order():
    fig = nf.hit_curves(sweep_frame(), layers=[2, 0])
    assert [ax.get_title() for ax in fig.axes] == ["layer 2", "layer 0"]


@pytest.mark.parametrize("layers", [[0, 7], [], ["1"]])
def test_hit_curves_refuse_layers_not_in_the_sweep(layers):
    with pytest.raises(ValueError, match=r"layers.*\[0, 1, 2\]"):
        nf.hit_curves(sweep_frame(), layers=layers)


def test_noise_figures_draw_model_and_component_names_literally():
    df = sweep_frame(models=("$m$", "a_b^c"), component="$$")
    fits = fits_frame().assign(model="$m$", component="$$")
    figs = [nf.hit_curves(df, fits), nf.hit_heatmap(df), nf.critical_levels(fits)]
    for fig in figs:
        assert renders(fig)
        fig.draw_without_rendering()
        texts = {t.get_text(): t for t in fig.findobj(Text)}
        shown = [name for name in texts if "$" in name]
        assert shown and not any(texts[name].get_parse_math() for name in shown)
    legend = figs[0].legends[0] if figs[0].legends else figs[0].axes[-1].get_legend()
    assert "$m$ $$ p_target" in [t.get_text() for t in legend.get_texts()]
    assert [ax.get_title() for ax in figs[1].axes[:2]] == ["$m$", "a_b^c"]


def _texts(fig):
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def test_critical_levels_without_any_fit_say_no_layer_crossed_and_the_range():
    fits = fits_frame().assign(status=["never_hit", "never_hit", "always_hit"])
    fits.attrs["level_range"] = (0.0, 2.5)
    fig = nf.critical_levels(fits)
    assert "no layer crossed: 2 never hit, 1 always hit in [0 … 2.5]" in _texts(fig)


def test_critical_levels_of_a_real_fit_without_a_crossing_name_the_swept_range():
    from compare.measures.phase import phase_transition

    df = sweep_frame(models=("mamba",), layers=(0, 1)).assign(hit=True)
    fig = nf.critical_levels(phase_transition(df, n_boot=5))
    assert "no layer crossed: 2 always hit in [0 … 1]" in _texts(fig)


def test_heatmap_of_two_layers_ticks_the_layers_only():
    fig = nf.hit_heatmap(sweep_frame(models=("mamba",), layers=(0, 1)))
    ax = fig.axes[0]
    assert list(ax.get_yticks()) == [0, 1]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1"]


def test_heatmap_of_many_layers_labels_every_kth_swept_layer():
    ax = nf.hit_heatmap(sweep_frame(models=("mamba",), layers=tuple(range(0, 48)))).axes[0]
    assert list(ax.get_yticks()) == list(range(0, 48, 2))


def test_critical_level_axis_ticks_integer_layers():
    fits = fits_frame().iloc[:2].assign(layer=[0, 1])
    ax = nf.critical_levels(fits).axes[0]
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)


def _overflowing_frame():
    df = sweep_frame(models=("mamba",), layers=(0, 1))
    finite = ~((df["layer"] == 1) & (df["level"] >= 0.9))  # layer 1's top two levels overflowed
    return df.assign(finite=finite, hit=df["hit"] & finite, p_target=df["p_target"].where(finite))


def test_figures_say_how_many_runs_overflowed_and_count_them_as_misses():
    from compare.measures.phase import phase_transition

    df = _overflowing_frame()
    note = "2 of 22 runs overflowed (no prediction), counted as misses"
    assert note in _texts(nf.hit_heatmap(df))
    curves = nf.hit_curves(df, layers=[0, 1])
    assert "2 of 11 runs overflowed (no prediction), counted as misses" in [t.get_text() for t in curves.axes[1].texts]
    assert not curves.axes[0].texts  # layer 0 did not overflow
    dots = curves.axes[1].collections[0].get_offsets()
    assert dots[-1][1] == 0.0 and dots[-2][1] == 0.0  # misses at the levels that overflowed
    fits = phase_transition(df.assign(layer=1), n_boot=5)
    assert "2 of 22 runs overflowed (no prediction), fitted as misses" in _texts(nf.critical_levels(fits))
