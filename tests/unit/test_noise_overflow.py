"""Overflow is data: a noisy run whose logits are not finite is a row (finite=False, no
prediction, a miss), counted and warned once; a single forward still raises NonFiniteError."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from compare.analyses.noise import noise_sweep, noisy_logits, prepare
from compare.analyses.noise_ref import noise_sweep_ref, traced_run
from compare.engine.prediction import NO_PREDICTION, OverflowRunsWarning

PROMPT = "When Mary and John went to the store , John gave a drink to"
TARGET = " Mary"
TOL = 1e-5  # p_target, fast vs reference, as in test_noise.py


@pytest.fixture(scope="module")
def mamba24():
    """A 24-layer Mamba at a tiny width (d_model 16), every weight jittered."""
    from conftest import TINY_VOCAB, _jitter, tiny_tokenizer
    from compare.ssm.mamba import MambaConfig, MambaLM
    from compare.handle.model import Model

    torch.manual_seed(0)
    module = _jitter(MambaLM(MambaConfig(d_model=16, n_layer=24, vocab_size=72, d_state=4)), 7).eval()
    return Model("tiny-mamba-24", "mamba", module, tiny_tokenizer(), TINY_VOCAB, None)


def _sweep(**kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = noise_sweep(PROMPT, **kw)
    return df, [w for w in caught if issubclass(w.category, OverflowRunsWarning)]


def test_a_24_layer_100_level_sweep_whose_top_levels_overflow_returns_every_row(mamba24):
    """Δ noise overflows exp(Δ·A) above about level 1 (absolute); before, the sweep raised at
    the first such run and lost every finished layer. Where the rows overflow is checked run by
    run against the one-trace reference over the band of levels where any layer turns over,
    and at the lowest and highest noisy level of every layer."""
    levels, trials = np.geomspace(1e-3, 1e6, 100), 1
    kw = dict(model=mamba24, target=TARGET, component="delta", levels=levels, trials=trials, scale="absolute")
    df, warned = _sweep(**kw)
    assert len(df) == 24 * 100 * trials
    assert sorted(df["layer"].unique()) == list(range(24))
    finite = df.pivot_table(index="layer", columns="level", values="finite", aggfunc="all").to_numpy(bool)
    assert finite[:, 0].all() and not finite[:, -1].any()  # the top levels overflow at every layer
    assert df.attrs["overflowed"] == (~df["finite"]).sum() > 0
    assert len(warned) == 1 and f"{df.attrs['overflowed']} of 2400 runs overflowed" in str(warned[0].message)
    # the band of level indices where some layer is neither all finite below nor all overflowed above
    mixed = ~finite.all(0) & finite.any(0)
    band = np.flatnonzero(mixed)
    lo, hi = band.min() - 1, band.max() + 1
    assert hi - lo < 12  # the transition is narrow on this log grid, so the reference stays cheap
    sweep = prepare(PROMPT, **kw)
    checked = [(layer, k) for layer in range(24) for k in range(lo, hi + 1)] + \
              [(layer, k) for layer in range(24) for k in (0, 99)]
    for layer, k in checked:
        level, key = sweep.runs[k * trials]
        ref_finite = bool(torch.isfinite(traced_run(sweep, layer, level, key)).all())
        assert finite[layer, k] == ref_finite, (layer, k, level)
    # outside the band every layer is all finite below and all overflowed above
    assert finite[:, :lo].all() and not finite[:, hi + 1:].any()


def test_rows_that_overflow_have_no_prediction_and_are_misses(mamba24):
    df, _ = _sweep(model=mamba24, target=TARGET, component="delta", layers=[0, 23], levels=[0.0, 1e-3, 1e6],
                   trials=2)
    over = df[~df["finite"]]
    assert len(over) == 4 and (over["level"] == 1e6).all()
    assert not over["hit"].any()
    assert over["p_target"].isna().all() and over["logit_diff"].isna().all()
    assert (over["predicted_id"] == NO_PREDICTION).all() and over["predicted"].isna().all()
    kept = df[df["finite"]]
    assert kept["p_target"].notna().all() and (kept["predicted_id"] >= 0).all() and kept["predicted"].notna().all()
    assert df["predicted_id"].dtype == np.int64 and df["finite"].dtype == bool


@pytest.mark.parametrize("draws", ["fresh", "ray"])
def test_fast_path_equals_the_reference_on_a_sweep_that_overflows(tiny, draws):
    kw = dict(model=tiny[0]["mamba"], target=TARGET, component="delta", levels=[0.0, 0.3, 3.0, 1e3, 1e38],
              trials=2, seed=3, draws=draws)
    fast, fast_warned = _sweep(**kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref = noise_sweep_ref(PROMPT, **kw)
    assert fast.attrs["overflowed"] == ref.attrs["overflowed"] > 0
    assert len(fast_warned) == 1 and sum(issubclass(w.category, OverflowRunsWarning) for w in caught) == 1
    pd.testing.assert_frame_equal(fast.drop(columns=["p_target", "logit_diff"]),
                                  ref.drop(columns=["p_target", "logit_diff"]))
    np.testing.assert_allclose(fast["p_target"], ref["p_target"], atol=TOL)  # NaN where both overflowed


def test_a_sweep_without_overflow_warns_nothing_and_counts_zero(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("error", OverflowRunsWarning)
        df = noise_sweep(PROMPT, model=tiny[0]["gpt2"], target=TARGET, component="resid_post", levels=[0.0, 0.5])
    assert df.attrs["overflowed"] == 0 and df["finite"].all()


@pytest.mark.parametrize("family,component", [("mamba", "h"), ("gpt2", "resid_post")])
def test_a_single_forward_still_raises(tiny, family, component):
    from compare import NonFiniteError

    with pytest.raises(NonFiniteError, match=r"NaN or infinite, first at layer 0, level 1e\+38, trial 0"):
        noisy_logits(PROMPT, model=tiny[0][family], target=TARGET, component=component, layers=[0], level=1e38)


def test_channel_runs_that_overflow_count_as_flips(tiny):
    """A run with no prediction did not keep the clean one: a flip; its p_target is left out."""
    from compare.analyses.channels import channel_sensitivity
    from compare.analyses.noise import Draw, sweep_noise

    handle, level, trials = tiny[0]["mamba"], 3.0, 2
    kw = dict(model=handle, target=TARGET, component="delta", trials=trials, scale="absolute")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = channel_sensitivity(PROMPT, layer=0, level=level, **kw)
    warned = [w for w in caught if issubclass(w.category, OverflowRunsWarning)]
    # independently: each (channel, trial) run as a plain nnsight trace, the sweep's ε kept on one channel
    sweep = prepare(PROMPT, layers=[0], levels=[level], **kw)
    overflowed = {}
    with torch.no_grad():
        for c in range(df["channel"].max() + 1):
            for t in range(trials):
                with handle.nn.trace(sweep.ids):
                    value = handle.point("delta", 0)
                    noise = sweep_noise(sweep, 0, [(level, Draw(t))], value[0])[0]
                    mask = torch.zeros_like(noise)
                    mask[:, c] = 1
                    value[:, :] += noise * mask
                    logits = handle.point("logits").save()
                overflowed[c, t] = not bool(torch.isfinite(logits[0, -1, : handle.vocab_size]).all())
    n = sum(overflowed.values())
    assert 0 < n < len(overflowed)  # some channels overflow, some do not: both kinds of row are exercised
    assert df.attrs["overflowed"] == n and len(warned) == 1 and f"{n} of {len(overflowed)} runs" in str(warned[0].message)
    for _, row in df.iterrows():
        over = sum(overflowed[row["channel"], t] for t in range(trials))
        assert row["overflowed"] == over
        if over == trials:
            assert row["flip_rate"] == 1 and np.isnan(row["p_target"])
        else:
            assert row["flip_rate"] >= over / trials and np.isfinite(row["p_target"])
