"""channel_sensitivity: one row per channel, noise restricted to the channel, ranked by flips."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from compare.analyses.channels import channel_sensitivity
from compare.analyses.noise import draw_noise

PROMPT = "When Mary and John went to the store , John gave a drink to"


def test_h_is_ranked_along_channels_and_state_dimensions(tiny):
    handle = tiny[0]["mamba"]
    df = channel_sensitivity(PROMPT, model=handle, target=" Mary", component="h", layer=0, level=3.0, trials=2)
    cfg = handle.module.config
    assert df.groupby("axis").size().to_dict() == {"d_in": cfg.d_inner, "n": cfg.d_state}
    for _, g in df.groupby("axis"):
        assert list(g["rank"]) == list(range(1, len(g) + 1))
        assert g["flip_rate"].is_monotonic_decreasing


@pytest.mark.parametrize("family,component", [("gpt2", "mlp_out"), ("pythia", "q")])
def test_one_channel_row_equals_a_hand_written_masked_trace(tiny, family, component):
    handle, layer, level, channel = tiny[0][family], 1, 4.0, 5
    df = channel_sensitivity(PROMPT, model=handle, target=" Mary", component=component, layer=layer,
                             level=level, trials=3, scale="absolute", seed=2)
    ids = handle.as_input(handle.encode(PROMPT))
    target = handle.encode(" Mary")[0]
    clean = handle.logits(ids)[0, -1].argmax().item()
    p, flips = [], []
    for trial in range(3):
        eps = draw_noise((ids.shape[1], 32), seed=2, layer=layer, trial=trial, distribution="gaussian")
        mask = torch.zeros_like(eps)
        mask[:, channel] = 1
        with handle.nn.trace(ids):
            handle.point(component, layer)[0] += level * eps * mask
            logits = handle.point("logits").save()
        last = logits[0, -1, : handle.vocab_size]
        p.append(torch.softmax(last, -1)[target].item())
        flips.append(last.argmax().item() != clean)
    row = df[(df["axis"] == "d") & (df["channel"] == channel)].iloc[0]
    assert row["p_target"] == pytest.approx(np.mean(p), abs=1e-5)
    assert row["flip_rate"] == pytest.approx(np.mean(flips))


@pytest.mark.parametrize("component,axes", [("x", ("heads", "p")), ("h", ("heads", "p", "n")), ("B", ("g", "n")),
                                            ("dt", ("heads",))])
def test_mamba2_axes_are_named_by_the_glossary_letters_and_sized_by_the_config(tiny, component, axes):
    """Mamba-2's x is [heads, p] per position: its headdim axis is "p", not a state axis."""
    handle = tiny[0]["mamba2"]
    cfg = handle.module.config
    size = {"heads": cfg.nheads, "p": cfg.headdim, "n": cfg.d_state, "g": cfg.ngroups}
    df = channel_sensitivity(PROMPT, model=handle, target=" Mary", component=component, layer=0, level=3.0,
                             trials=1)
    assert list(dict.fromkeys(df["axis"])) == sorted(axes)
    assert df.groupby("axis").size().to_dict() == {axis: size[axis] for axis in axes}


def test_a_headdim_row_equals_a_hand_written_masked_trace(tiny):
    """The "p" axis of Mamba-2's x masks one headdim coordinate in every head."""
    handle, layer, level, p = tiny[0]["mamba2"], 1, 4.0, 3
    df = channel_sensitivity(PROMPT, model=handle, target=" Mary", component="x", layer=layer, level=level,
                             trials=2, scale="absolute", seed=2)
    ids = handle.as_input(handle.encode(PROMPT))
    cfg = handle.module.config
    target = handle.encode(" Mary")[0]
    probs = []
    for trial in range(2):
        eps = draw_noise((ids.shape[1], cfg.nheads, cfg.headdim), seed=2, layer=layer, trial=trial,
                         distribution="gaussian")
        mask = torch.zeros_like(eps)
        mask[:, :, p] = 1
        with torch.no_grad(), handle.nn.trace(ids):  # x is a view of in_proj's split: edited without autograd
            handle.point("x", layer)[0] += level * eps * mask
            logits = handle.point("logits").save()
        probs.append(torch.softmax(logits[0, -1, : handle.vocab_size], -1)[target].item())
    row = df[(df["axis"] == "p") & (df["channel"] == p)].iloc[0]
    assert row["p_target"] == pytest.approx(np.mean(probs), abs=1e-5)


def test_reading_the_runs_in_blocks_changes_nothing(tiny, monkeypatch):
    kw = dict(model=tiny[0]["mamba"], target=" Mary", component="h", layer=1, level=3.0, trials=2)
    whole = channel_sensitivity(PROMPT, **kw)
    monkeypatch.setattr("compare.analyses.noise.READ_ROWS", 7)  # 7 runs of the 2 × (d_in + n) per block
    pd.testing.assert_frame_equal(channel_sensitivity(PROMPT, **kw), whole, check_exact=False, atol=1e-6, rtol=0)


def test_zero_noise_flips_nothing(tiny):
    df = channel_sensitivity(PROMPT, model=tiny[0]["mamba"], target=" Mary", component="x", layer=1,
                             level=0.0, trials=1)
    assert (df["flip_rate"] == 0).all() and len(df) == tiny[0]["mamba"].module.config.d_inner


def test_bad_layer_is_refused(tiny):
    with pytest.raises(ValueError, match="layer must be an int in 0..1"):
        channel_sensitivity(PROMPT, model=tiny[0]["gpt2"], target=" Mary", component="mlp_out", layer=7, level=1.0)


@pytest.mark.parametrize("kw,needle", [({"layer": [0, 1]}, "layer must be a single value"),
                                       ({"level": [0.5, 1.0]}, "level must be a single value")])
def test_a_sequence_where_one_layer_or_level_is_meant_is_refused_by_name(tiny, kw, needle):
    args = dict(model=tiny[0]["gpt2"], target=" Mary", component="mlp_out", layer=0, level=1.0) | kw
    with pytest.raises(ValueError, match=needle):
        channel_sensitivity(PROMPT, **args)


@pytest.mark.parametrize("family,layer", [("mamba2", 1), ("granite_hybrid", 0), ("falcon_h1", 1)])
@pytest.mark.parametrize("component,k,channel", [("h", 0, 1), ("h", 2, 3), ("B", 1, 2)])
def test_a_channel_of_an_into_y_point_restarts_from_y_and_equals_a_masked_trace(tiny, monkeypatch, family, layer,
                                                                                  component, k, channel):
    """Mamba-2's and the hybrids' h and B change y linearly: their channel runs restart from y
    (`restart.run_into_y`, spied), and a channel's row equals the trace a user would write, the
    noise of noise_sweep's draw kept on that channel (every head's, state's or group's) only."""
    from compare.analyses import channels, noise_ref
    from compare.analyses.noise import Draw, prepare

    handle, level, trials = tiny[0][family], 3.0, 2
    engines = []
    for name in ("run_into_y", "run_noised"):
        real = getattr(channels, name)
        monkeypatch.setattr(channels, name, lambda *a, _real=real, _name=name, **k: engines.append(_name) or _real(*a, **k))
    df = channel_sensitivity(PROMPT, model=handle, target=" Mary", component=component, layer=layer, level=level,
                             trials=trials, seed=1, scale="relative")
    assert set(engines) == {"run_into_y"}
    sweep = prepare(PROMPT, model=handle, target=" Mary", component=component, layers=[layer], levels=[level],
                    trials=trials, seed=1, scale="relative")
    idx = list(sweep.positions)
    axis, dim = list(channels.feature_axes(handle, component))[k], 1 + k  # heads (H) or n; [P, *feature]: axis k at 1 + k
    clean = handle.logits(sweep.ids)[0, -1].argmax().item()
    p, flips = [], []
    for trial in range(trials):
        with torch.no_grad(), handle.nn.trace(sweep.ids):
            value = handle.point(component, layer)
            eps = noise_ref.sweep_noise(sweep, layer, [(level, Draw(trial))], value[0, idx])[0]
            mask = torch.zeros_like(eps)
            mask.select(dim, channel).fill_(1)
            value[:, idx] += (eps * mask).to(value.dtype)
            logits = handle.point("logits").save()
        last = logits[0, -1, : handle.vocab_size].float()
        p.append(torch.softmax(last, -1)[sweep.target].item())
        flips.append(last.argmax().item() != clean)
    row = df[(df["axis"] == axis) & (df["channel"] == channel)].iloc[0]
    assert row["p_target"] == pytest.approx(np.mean(p), abs=1e-5)
    assert row["flip_rate"] == pytest.approx(np.mean(flips))
