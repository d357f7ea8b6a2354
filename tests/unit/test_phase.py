"""phase_transition on synthetic hits drawn with numpy from a known logistic curve."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from compare.measures.phase import COLUMNS, MIN_RAY_TRIALS, fit_logistic, fit_logistic_ref, phase_transition


def synthetic(c, w, *, levels=np.linspace(0, 1, 60), trials=12, seed=0, layer=0, model="m", component="h"):
    """Fresh draws: every (level, trial) an independent Bernoulli draw from the logistic."""
    rng = np.random.default_rng(seed)
    level = np.repeat(levels, trials)
    p = 1 / (1 + np.exp((level - c) / w))
    df = pd.DataFrame({"model": model, "layer": layer, "component": component, "level": level,
                       "trial": np.tile(np.arange(trials), len(levels)), "hit": rng.random(level.size) < p})
    df.attrs["draws"] = "fresh"
    return df


@pytest.mark.parametrize("c,w", [(0.3, 0.04), (0.55, 0.08), (0.8, 0.02)])
def test_recovers_a_known_critical_level_and_width(c, w):
    fit = phase_transition(synthetic(c, w), n_boot=50).iloc[0]
    assert fit["status"] == "fit"
    assert fit["critical_level"] == pytest.approx(c, abs=0.02)
    assert fit["ci_low"] <= c <= fit["ci_high"]
    assert fit["width"] == pytest.approx(2 * np.log(9) * w, rel=0.4)


def test_one_row_per_layer_and_component_in_order():
    df = pd.concat([synthetic(0.5, 0.05, layer=1), synthetic(0.3, 0.05, layer=0),
                    synthetic(0.4, 0.05, layer=0, component="x")])
    fits = phase_transition(df, n_boot=10)
    assert list(fits.columns) == COLUMNS
    assert list(zip(fits["layer"], fits["component"])) == [(0, "h"), (0, "x"), (1, "h")]


def test_each_fit_carries_its_layers_kind_from_the_sweep_and_none_without_it():
    df = pd.concat([synthetic(0.5, 0.05, layer=1).assign(kind="attention"),
                    synthetic(0.3, 0.05, layer=0).assign(kind="ssm")])
    assert phase_transition(df, n_boot=10)["kind"].tolist() == ["ssm", "attention"]
    assert phase_transition(synthetic(0.5, 0.05), n_boot=10)["kind"].tolist() == [None]


def test_perfectly_separated_hits_put_c_between_last_hit_and_first_miss():
    level = np.linspace(0, 1, 101)
    df = pd.DataFrame({"model": "m", "layer": 0, "component": "h", "level": level, "trial": 0,
                       "hit": level < 0.425})
    fit = phase_transition(df, n_boot=20).iloc[0]
    assert 0.42 <= fit["critical_level"] <= 0.43
    assert np.isfinite(fit["width"]) and fit["width"] < 0.1


def test_a_layer_that_never_flips_is_flagged_not_fitted():
    df = synthetic(0.5, 0.05).assign(hit=True)
    fit = phase_transition(df).iloc[0]
    assert fit["status"] == "always_hit" and fit["critical_level"] == np.inf and np.isnan(fit["ci_low"])


def test_a_clean_miss_is_flagged_never_hit():
    fit = phase_transition(synthetic(0.5, 0.05).assign(hit=False)).iloc[0]
    assert fit["status"] == "never_hit" and np.isnan(fit["critical_level"])


def test_the_bootstrap_is_seeded():
    df = synthetic(0.5, 0.1, trials=4)
    a, b = phase_transition(df, seed=1, n_boot=40), phase_transition(df, seed=1, n_boot=40)
    other = phase_transition(df, seed=2, n_boot=40)
    pd.testing.assert_frame_equal(a, b)
    assert (a["ci_low"].item(), a["ci_high"].item()) != (other["ci_low"].item(), other["ci_high"].item())


def test_single_trial_fresh_sweeps_bootstrap_over_runs():
    fit = phase_transition(synthetic(0.5, 0.05, levels=np.linspace(0, 1, 200), trials=1), n_boot=50).iloc[0]
    assert fit["ci_low"] < fit["critical_level"] < fit["ci_high"]


@pytest.mark.parametrize("kw,needle", [({"confidence": 1.0}, "confidence"), ({"n_boot": 0}, "n_boot"),
                                        ({"confidence": "high"}, "confidence"), ({"n_boot": 2.5}, "n_boot"),
                                        ({"seed": -1}, "seed: must be an integer ≥ 0"),  # numpy's words, no name
                                        ({"seed": 1.5}, "seed: must be an integer ≥ 0")])  # was a TypeError
def test_bad_arguments_are_refused(kw, needle):
    with pytest.raises(ValueError, match=needle):
        phase_transition(synthetic(0.5, 0.05), **kw)


def test_a_frame_without_the_sweep_columns_is_refused():
    with pytest.raises(ValueError, match="lacks columns"):
        phase_transition(pd.DataFrame({"level": [0.1], "hit": [True]}))


def sweep(level, hit, *, trial=0, layer=0):
    return pd.DataFrame({"model": "m", "layer": layer, "component": "h", "level": level, "trial": trial,
                         "hit": hit})


def assert_not_estimated(fit, status):
    assert fit["status"] == status
    assert np.isnan([fit["critical_level"], fit["ci_low"], fit["ci_high"], fit["width"]]).all()


def test_one_level_is_not_estimable():
    fit = phase_transition(sweep([0.5] * 8, [True, False] * 4), n_boot=20).iloc[0]
    assert_not_estimated(fit, "not estimable: one level")


def test_hits_rising_with_noise_are_not_estimable():
    # the clean prediction hits, a little noise breaks it, more noise brings it back
    level = np.repeat(np.linspace(0, 1, 11), 4)
    hit = (level == 0) | (level > 0.3)
    fit = phase_transition(sweep(level, hit, trial=np.tile(np.arange(4), 11)), n_boot=20).iloc[0]
    assert_not_estimated(fit, "not estimable: hit rises with noise")


def test_only_the_lowest_level_hitting_is_not_estimable():
    level = np.linspace(0, 1, 21)
    fit = phase_transition(sweep(level, level == 0), n_boot=20).iloc[0]
    assert_not_estimated(fit, "not estimable: only the lowest level hits")


def test_a_midpoint_beyond_the_swept_levels_is_flagged_without_a_ci():
    # p(hit) falls from 1 to only ~0.84 at the top level: the 0.5 point (1.5) lies past the sweep
    fit = phase_transition(synthetic(1.5, 0.3, trials=20), n_boot=20).iloc[0]
    assert_not_estimated(fit, "beyond range")


def test_a_degenerate_layer_does_not_spoil_the_others():
    good = synthetic(0.5, 0.05, layer=0)
    flat = synthetic(0.5, 0.05, layer=1).assign(level=0.5)
    fits = phase_transition(pd.concat([good, flat]), n_boot=20)
    assert fits["status"].tolist() == ["fit", "not estimable: one level"]
    assert fits["critical_level"].iloc[0] == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("column, values", [
    ("hit", ["True", "False"] * 5), ("hit", ["yes", "no"] * 5), ("hit", [True, None] * 5),
    ("hit", [1.0, np.nan] * 5), ("hit", [0, 2] * 5), ("level", [0.0, np.nan] * 5),
    ("level", [0.0, None] * 5), ("level", ["0.1", "0.2"] * 5), ("level", [0.0, -0.5] * 5),
    ("level", [0.0, np.inf] * 5),
], ids=["hit-str", "hit-yes", "hit-none", "hit-nan", "hit-2", "level-nan", "level-none", "level-str",
        "level-negative", "level-inf"])
def test_malformed_columns_are_refused_naming_the_column(column, values):
    df = sweep(np.linspace(0, 1, 10), [True] * 5 + [False] * 5)
    df[column] = values
    with pytest.raises(ValueError, match=rf"df\[{column!r}\]"):
        phase_transition(df, n_boot=5)


def test_hits_as_zero_and_one_are_read_as_booleans():
    level = np.linspace(0, 1, 101)
    as_bool, as_int = sweep(level, level < 0.425), sweep(level, (level < 0.425).astype(int))
    pd.testing.assert_frame_equal(phase_transition(as_bool, n_boot=5), phase_transition(as_int, n_boot=5))


def test_an_empty_frame_is_refused():
    with pytest.raises(ValueError, match="df: no rows"):
        phase_transition(sweep([], []))


def test_something_other_than_a_frame_is_refused():
    with pytest.raises(TypeError, match="df: must be a pandas DataFrame"):
        phase_transition(None)


def rays(thresholds, levels=np.linspace(0, 1, 50)):
    """A ray sweep: trial t hits at level x iff x < thresholds[t] (one direction, one crossing)."""
    level = np.repeat(levels, len(thresholds))
    trial = np.tile(np.arange(len(thresholds)), len(levels))
    df = sweep(level, (level < np.asarray(thresholds)[trial]) | (level == 0), trial=trial)
    df.attrs["draws"] = "ray"
    return df


@pytest.mark.parametrize("n", [1, 4, MIN_RAY_TRIALS - 1])
def test_too_few_rays_keep_the_estimate_but_say_the_ci_is_unreliable(n):
    fit = phase_transition(rays(np.linspace(0.4, 0.5, n)), n_boot=20).iloc[0]
    plural = "trial" if n == 1 else "trials"
    assert fit["status"].startswith(f"ci unreliable: {n} {plural} of rays, need ≥ {MIN_RAY_TRIALS}")
    assert 0.38 <= fit["critical_level"] <= 0.52 and np.isnan(fit["ci_low"]) and np.isnan(fit["ci_high"])


def test_enough_rays_get_an_interval_from_resampling_whole_rays():
    fit = phase_transition(rays(np.linspace(0.3, 0.6, MIN_RAY_TRIALS)), n_boot=100).iloc[0]
    assert fit["status"] == "fit" and 0.3 <= fit["ci_low"] < fit["critical_level"] < fit["ci_high"] <= 0.6


def test_draws_default_to_the_frames_attrs_and_else_to_rays():
    df = synthetic(0.5, 0.05, trials=1)
    assert phase_transition(df, n_boot=10)["status"].item() == "fit"  # attrs: fresh
    df.attrs.clear()
    assert phase_transition(df, n_boot=10)["status"].item().startswith("ci unreliable: 1 trial of rays")
    assert phase_transition(df, draws="fresh", n_boot=10)["status"].item() == "fit"


def test_draws_must_be_fresh_or_ray():
    with pytest.raises(ValueError, match=r"draws must be one of \('fresh', 'ray'\)"):
        phase_transition(synthetic(0.5, 0.05), draws="rays")


@pytest.mark.parametrize("c,w,trials", [(0.45, 0.05, 1), (0.3, 0.1, 4), (0.5, 0.002, 2)])
def test_batched_newton_fit_equals_the_scipy_reference(c, w, trials):
    """Bootstrap weights included; tolerance: scipy's BFGS stops at a gradient of 1e-5."""
    df = synthetic(c, w, levels=np.linspace(0, 1, 40), trials=trials, seed=3)
    weights = np.random.default_rng(0).multinomial(len(df), np.full(len(df), 1 / len(df)), size=12)
    fast, ref = fit_logistic(df["level"], df["hit"], weights), fit_logistic_ref(df["level"], df["hit"], weights)
    np.testing.assert_allclose(fast[0], ref[0], atol=1e-5)
    np.testing.assert_allclose(fast[1], ref[1], rtol=1e-3)


def test_a_resample_of_one_class_has_no_fit():
    level, hit = np.array([0.0, 0.5, 1.0]), np.array([True, True, False])
    c, w = fit_logistic(level, hit, np.array([[1, 1, 1], [1, 2, 0]]))
    assert np.isfinite(c[0]) and np.isnan(c[1]) and np.isnan(w[1])


def test_no_interval_is_finer_than_the_step_between_swept_levels():
    # every ray crosses between the same two levels: each resample fits the same midpoint, yet
    # the data only place the transition somewhere in that step
    levels = np.linspace(0, 1, 50)
    fit = phase_transition(rays(np.linspace(0.45, 0.455, MIN_RAY_TRIALS), levels=levels), n_boot=50).iloc[0]
    below, above = levels[levels < 0.45].max(), levels[levels > 0.455].min()
    assert (fit["ci_low"], fit["ci_high"]) == (below, above)
    assert below < fit["critical_level"] < above


def study_rows(*prompts):
    """A study's noise_sweep rows (`compare.study`): per prompt_index a sweep, `draws` a column,
    no attrs (they do not survive the study's files)."""
    frames = [synthetic(c, 0.05, trials=1, seed=i).assign(prompt_index=i, draws="fresh")
              for i, c in enumerate(prompts)]
    df = pd.concat(frames, ignore_index=True)
    df.attrs.clear()
    return df


def test_a_studys_rows_are_fitted_per_prompt_with_their_draws_column():
    """Pooled, two prompts with transitions at 0.3 and 0.7 would give one midpoint near 0.5; read
    as rays (no attrs), one trial each would have no interval."""
    df = study_rows(0.3, 0.7)
    fits = phase_transition(df, n_boot=20)
    assert list(fits.columns) == ["prompt_index", *COLUMNS] and list(fits["prompt_index"]) == [0, 1]
    for i, c in enumerate((0.3, 0.7)):
        alone = phase_transition(df[df["prompt_index"] == i].drop(columns=["prompt_index", "draws"]),
                                 draws="fresh", n_boot=20).iloc[0]
        fit = fits.iloc[i]
        assert fit["status"] == "fit" and fit["critical_level"] == alone["critical_level"]
        assert abs(fit["critical_level"] - c) < 0.1 and fit["ci_low"] < fit["critical_level"] < fit["ci_high"]


def test_a_studys_rows_mixing_draws_are_refused():
    df = study_rows(0.3, 0.7)
    df.loc[df["prompt_index"] == 1, "draws"] = "ray"
    with pytest.raises(ValueError, match=r"df\['draws'\]: the rows mix draws \['fresh', 'ray'\]"):
        phase_transition(df)


def test_runs_that_overflowed_are_counted_and_fitted_as_misses():
    """Rows with finite=False (logits overflowed, no prediction) are misses, whatever their hit
    says; the fit equals the fit of the same rows with those hits set to False by hand."""
    df = pd.concat([synthetic(0.5, 0.05, layer=0), synthetic(0.4, 0.05, layer=1)], ignore_index=True)
    df.attrs["draws"] = "fresh"
    finite = ~((df["level"] > 0.8) & (df["layer"] == 1)).to_numpy()
    stale = df.assign(hit=df["hit"] | ~finite, finite=finite)  # a stale hit=True on an overflowed row
    by_hand = df.assign(hit=df["hit"] & finite)
    fits = phase_transition(stale, n_boot=20)
    expected = phase_transition(by_hand, n_boot=20)
    pd.testing.assert_frame_equal(fits.drop(columns="overflowed"), expected.drop(columns="overflowed"))
    assert fits["overflowed"].tolist() == [0, int((~finite).sum())]
    assert fits.attrs["overflowed"] == int((~finite).sum()) and fits.attrs["level_range"] == (0.0, 1.0)
    assert expected["overflowed"].tolist() == [0, 0]  # a frame without `finite`: nothing overflowed


def test_a_finite_column_that_is_not_boolean_is_refused_by_name():
    df = synthetic(0.5, 0.05).assign(finite="yes")
    with pytest.raises(ValueError, match=r"df\['finite'\]: must be True/False"):
        phase_transition(df, n_boot=5)
