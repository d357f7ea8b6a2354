"""noise_sweep: clean at level 0, equal to the one-trace-per-run reference, exact semantics on h."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from compare.analyses.noise import DRAWS, draw_noise, noise_sweep, noisy_logits
from compare.analyses.noise_ref import noise_sweep_ref

PROMPT = "When Mary and John went to the store , John gave a drink to"
TARGET = " Mary"
TOL = 1e-5  # p_target, fast (batched, chunked) vs reference (one trace per run)


def _target_id(handle):
    return handle.encode(TARGET)[0]


def _clean_last(handle):
    return handle.logits(handle.encode(PROMPT))[0, -1]


@pytest.mark.parametrize("family,component", [("mamba", "h"), ("gpt2", "resid_pre"), ("pythia", "q")])
def test_level_zero_reproduces_the_clean_run_exactly(tiny, family, component):
    handle = tiny[0][family]
    df = noise_sweep(PROMPT, model=handle, target=TARGET, component=component, levels=[0.0, 0.5])
    logits = _clean_last(handle)
    t = _target_id(handle)
    others = logits.clone()
    others[t] = -torch.inf
    for _, row in df[df["level"] == 0].iterrows():
        assert row["p_target"] == torch.softmax(logits, -1)[t].item()
        assert row["logit_diff"] == (logits[t] - others.max()).item()
        assert row["predicted_id"] == logits.argmax().item()
        assert row["hit"] == (logits.argmax().item() == t)


@pytest.mark.parametrize("component", ["h", "delta"])  # the affine restart and the hooked forward
def test_a_sweep_or_read_group_of_level_zero_only_is_the_clean_run(tiny, monkeypatch, component):
    handle = tiny[0]["mamba"]
    clean_p = torch.softmax(_clean_last(handle), -1)[_target_id(handle)].item()
    only_zero = noise_sweep(PROMPT, model=handle, target=TARGET, component=component, levels=[0.0], trials=2)
    assert (only_zero["p_target"] == clean_p).all()
    monkeypatch.setattr("compare.analyses.noise.READ_ROWS", 2)  # the first group holds level 0's two trials
    grouped = noise_sweep(PROMPT, model=handle, target=TARGET, component=component, levels=[0.0, 0.5], trials=2)
    assert (grouped[grouped["level"] == 0]["p_target"] == clean_p).all()
    assert (grouped[grouped["level"] == 0.5]["p_target"] != clean_p).all()


@pytest.mark.parametrize("family,component,scale,positions", [
    ("mamba", "h", "absolute", None),
    ("mamba", "h_readout", "relative", [3, -1]),
    ("mamba", "delta", "relative", None),
    ("mamba", "resid_post", "absolute", [0]),
    # the rest of AFFINE, whose runs restart after the injected block from its response
    ("mamba", "B", "relative", None),
    ("mamba", "C", "absolute", [2, -1]),
    ("mamba", "B_bar", "relative", None),
    ("mamba", "write", "absolute", None),
    ("mamba", "y", "relative", [0, 4]),
    ("mamba", "mixer_out", "absolute", None),
    ("mamba", "A_bar", "relative", None),
    ("gpt2", "q", "relative", None),
    ("gpt2", "v", "absolute", [-2]),
    ("gpt2", "attn_out", "relative", None),
    ("gpt2", "resid_mid", "absolute", None),
    ("gpt2", "mlp_out", "relative", [1, 5]),
    ("gpt2", "resid_post", "absolute", None),
    ("pythia", "resid_pre", "relative", None),
    ("pythia", "q", "absolute", None),  # after rotary: hooked inside the attention function
    ("pythia", "k", "relative", [1, -1]),
    # affine on Pythia (parallel residual: nothing nonlinear follows them in the block)
    ("pythia", "v", "relative", None),
    ("pythia", "attn_out", "absolute", [0, 3]),
    ("pythia", "mlp_out", "relative", None),
    ("pythia", "resid_post", "absolute", [-2]),
])
@pytest.mark.parametrize("draws", DRAWS)
def test_fast_path_equals_one_trace_per_run(tiny, family, component, scale, positions, draws):
    kw = dict(model=tiny[0][family], target=TARGET, component=component, levels=[0.0, 0.8, 3.0],
              trials=2, scale=scale, positions=positions, seed=3, draws=draws)
    fast, ref = noise_sweep(PROMPT, **kw), noise_sweep_ref(PROMPT, **kw)
    pd.testing.assert_frame_equal(fast.drop(columns=["p_target", "logit_diff"]),
                                  ref.drop(columns=["p_target", "logit_diff"]))
    np.testing.assert_allclose(fast["p_target"], ref["p_target"], atol=TOL)
    np.testing.assert_allclose(fast["logit_diff"], ref["logit_diff"], atol=1e-4)
    assert (fast["p_target"] != fast.groupby("layer")["p_target"].transform("first")).any()


@pytest.mark.parametrize("draws", DRAWS)
@pytest.mark.parametrize("bias", [False, True])
def test_fast_path_equals_one_trace_per_run_through_a_deep_mamba(bias, draws):
    """Four layers, so that the block after the injected one is sometimes not the last (its
    in_proj is then computed from the ray projections), with and without in_proj's bias, and
    with every weight jittered so RMSNorm's weight is not 1."""
    from conftest import TINY_VOCAB, _jitter, tiny_tokenizer
    from compare.ssm.mamba import MambaConfig, MambaLM
    from compare.handle.model import Model

    torch.manual_seed(0)
    module = _jitter(MambaLM(MambaConfig(d_model=32, n_layer=4, vocab_size=72, d_state=8, bias=bias)), 5).eval()
    handle = Model("deep-tiny-mamba", "mamba", module, tiny_tokenizer(), TINY_VOCAB, None)
    for component in ("h", "resid_post"):
        kw = dict(model=handle, target=TARGET, component=component, levels=[0.0, 0.8, 3.0], trials=2, seed=3,
                  draws=draws)
        fast, ref = noise_sweep(PROMPT, **kw), noise_sweep_ref(PROMPT, **kw)
        np.testing.assert_allclose(fast["p_target"], ref["p_target"], atol=TOL)
        np.testing.assert_allclose(fast["logit_diff"], ref["logit_diff"], atol=1e-4)


def test_noise_on_h_equals_a_hand_written_recurrence(tiny):
    handle, layer, pos, level = tiny[0]["mamba"], 1, 3, 0.7
    ids = handle.as_input(handle.encode(PROMPT))
    with handle.nn.trace(ids):
        x = handle.point("x", layer).save()
        C = handle.point("C", layer).save()
        A_bar = handle.point("A_bar", layer).save()
        write = handle.point("write", layer).save()
    D = handle.module.layers[layer].mixer.D.detach()
    noise = level * draw_noise((1, *A_bar.shape[2:]), seed=0, layer=layer, trial=0, level_index=0,
                               distribution="gaussian")[0]
    h = torch.zeros_like(A_bar[0, 0])
    ys = []
    for t in range(ids.shape[1]):
        h = A_bar[0, t] * h + write[0, t] + (noise if t == pos else 0)
        ys.append((h * C[0, t]).sum(-1) + D * x[0, t])
    with handle.nn.trace(ids):
        handle.point("y", layer)[0] = torch.stack(ys)
        logits = handle.point("logits").save()
    expected = torch.softmax(logits[0, -1, : handle.vocab_size], -1)[_target_id(handle)].item()

    df = noise_sweep(PROMPT, model=handle, target=TARGET, component="h", layers=[layer], levels=[level],
                     positions=[pos])
    assert df["p_target"].item() == pytest.approx(expected, abs=TOL)


def test_h_readout_leaves_earlier_positions_and_the_state_alone(tiny):
    # noise read out at the last position only changes y there; on h it is the same at the
    # last position because nothing comes after it — both variants must agree
    kw = dict(model=tiny[0]["mamba"], target=TARGET, layers=[0], levels=[2.0], positions=[-1], seed=5)
    h = noise_sweep(PROMPT, component="h", **kw)
    readout = noise_sweep(PROMPT, component="h_readout", **kw)
    assert h["p_target"].item() == pytest.approx(readout["p_target"].item(), abs=TOL)
    early_h = noise_sweep(PROMPT, component="h", **(kw | {"positions": [0]}))
    early_readout = noise_sweep(PROMPT, component="h_readout", **(kw | {"positions": [0]}))
    assert early_h["p_target"].item() != pytest.approx(early_readout["p_target"].item(), abs=TOL)


def test_relative_scale_is_level_times_the_clean_rms(tiny):
    handle, positions = tiny[0]["gpt2"], [2, 4]
    with handle.nn.trace(handle.as_input(handle.encode(PROMPT))):
        value = handle.point("mlp_out", 1).save()
    rms = value[0, positions].pow(2).mean().sqrt().item()
    kw = dict(model=handle, target=TARGET, component="mlp_out", layers=[1], positions=positions)
    relative = noise_sweep(PROMPT, levels=[0.5], scale="relative", **kw)
    absolute = noise_sweep(PROMPT, levels=[0.5 * rms], scale="absolute", **kw)
    assert relative["p_target"].item() == pytest.approx(absolute["p_target"].item(), abs=TOL)


@pytest.mark.parametrize("distribution", ["gaussian", "uniform"])
def test_noise_has_zero_mean_and_unit_variance(distribution):
    eps = draw_noise((400_000,), seed=0, layer=0, trial=0, distribution=distribution).double()
    assert abs(eps.mean().item()) < 0.01
    assert eps.var().item() == pytest.approx(1.0, abs=0.01)
    if distribution == "uniform":
        assert eps.abs().max().item() <= 3 ** 0.5
        assert eps.abs().max().item() > 3 ** 0.5 - 0.01
    else:
        assert ((eps > -1) & (eps < 1)).double().mean().item() == pytest.approx(0.6827, abs=0.005)


def test_noise_depends_only_on_seed_layer_and_trial():
    a = draw_noise((4, 8), seed=1, layer=2, trial=3, distribution="gaussian")
    assert torch.equal(a, draw_noise((4, 8), seed=1, layer=2, trial=3, distribution="gaussian"))
    for other in ({"seed": 2}, {"layer": 3}, {"trial": 4}):
        args = {"seed": 1, "layer": 2, "trial": 3} | other
        assert not torch.equal(a, draw_noise((4, 8), distribution="gaussian", **args))


def test_results_do_not_depend_on_chunking_or_on_the_other_levels(tiny, monkeypatch):
    kw = dict(model=tiny[0]["mamba"], target=TARGET, component="h", trials=2, seed=7, draws="ray")
    whole = noise_sweep(PROMPT, levels=[0.4, 1.5], **kw)
    one_at_a_time = noise_sweep(PROMPT, levels=[0.4, 1.5], max_bytes=400_000, **kw)
    monkeypatch.setattr("compare.analyses.noise.READ_ROWS", 3)  # logits read in blocks of 3 runs
    in_blocks = noise_sweep(PROMPT, levels=[0.0, 0.4, 1.5], **kw)
    pd.testing.assert_frame_equal(in_blocks[in_blocks["level"] > 0].reset_index(drop=True), whole,
                                  check_exact=False, atol=1e-6, rtol=0)
    alone = noise_sweep(PROMPT, levels=[1.5], **kw)
    np.testing.assert_allclose(whole["p_target"], one_at_a_time["p_target"], atol=1e-6)
    np.testing.assert_allclose(whole[whole["level"] == 1.5]["p_target"], alone["p_target"], atol=1e-6)
    other_seed = noise_sweep(PROMPT, levels=[1.5], **(kw | {"seed": 8}))
    assert not np.allclose(alone["p_target"], other_seed["p_target"])


def test_model_may_be_a_source_string_and_prompt_token_ids(tiny, tiny_dirs):
    handle = tiny[0]["gpt2"]
    by_text = noise_sweep(PROMPT, model=handle, target=_target_id(handle), component="mlp_out", levels=[1.0])
    by_path = noise_sweep(handle.encode(PROMPT), model=str(tiny_dirs[0]["gpt2"]), target=TARGET,
                          component="mlp_out", levels=[1.0])
    np.testing.assert_allclose(by_text["p_target"], by_path["p_target"], atol=1e-6)
    assert list(by_text.columns) == ["model", "layer", "kind", "component", "level", "trial", "hit", "p_target",
                                     "logit_diff", "predicted_id", "predicted", "finite"]


def test_noisy_logits_gives_clean_and_noisy_vectors(tiny):
    handle = tiny[0]["mamba"]
    df = noisy_logits(PROMPT, model=handle, target=TARGET, component="resid_post", layers=[0, 1], level=1.0)
    clean = df[(df["run"] == "clean") & (df["layer"] == 0)]["logit"].to_numpy()
    np.testing.assert_array_equal(clean, _clean_last(handle).numpy())
    assert len(df) == 2 * 2 * handle.vocab_size


@pytest.mark.parametrize("override,needle", [
    ({"component": "nope"}, "valid: resid_pre"),
    ({"component": "logits"}, "model-level"),
    ({"layers": [5]}, "layers must be a non-empty list of ints in 0..1 (negative counts from the end)"),
    ({"layers": []}, "layers must be a non-empty list"),
    ({"levels": [0.1, -0.2]}, "levels[1]: must be a finite number ≥ 0, got -0.2"),
    ({"levels": [np.nan]}, "levels[0]: must be a finite number ≥ 0, got nan"),
    ({"levels": []}, "levels: must be a non-empty list of finite numbers ≥ 0"),
    ({"levels": ["low"]}, "levels[0]: must be a finite number ≥ 0, got 'low'"),
    ({"target": " Mary and"}, "exactly one token"),
    ({"target": 10_000}, "target must be"),
    ({"trials": 0}, "trials: must be an integer ≥ 1, got 0"),
    ({"distribution": "cauchy"}, "distribution: 'cauchy' is not allowed; allowed values are gaussian, uniform"),
    ({"scale": "log"}, "scale: 'log' is not allowed; allowed values are absolute, relative"),
    ({"draws": "rays"}, "draws: 'rays' is not allowed; allowed values are fresh, ray"),
    ({"positions": [99]}, "positions must be"),
    ({"model": 3}, "model must be"),
    ({"max_bytes": 1000}, "raise max_bytes"),
])
def test_bad_input_is_refused_with_the_valid_values(tiny, override, needle):
    kw = dict(model=tiny[0]["mamba"], target=TARGET, component="h", levels=[0.5]) | override
    with pytest.raises(ValueError) as err:
        noise_sweep(PROMPT, **kw)
    assert needle in str(err.value)


def test_a_sweep_whose_result_would_not_fit_in_memory_is_refused_before_any_compute(tiny, monkeypatch):
    monkeypatch.setattr("compare.base.memory.available_bytes", lambda: 2**20)
    monkeypatch.setattr("compare.analyses.noise.clean_pass", lambda *a: pytest.fail("computed before refusing"))
    with pytest.raises(ValueError, match=r"40,000 runs .* needs about 10 MiB, more than half of the 1 MiB"):
        noise_sweep(PROMPT, model=tiny[0]["mamba"], target=TARGET, component="h", levels=np.linspace(0, 1, 20_000))


@pytest.mark.parametrize("family,why", [("gpt2", "read after attention used it"), ("pythia", "second axis")])
def test_pattern_is_refused_with_the_reason_its_registry_gives(tiny, family, why):
    with pytest.raises(ValueError, match=f"'pattern' cannot be noised; .*{why}"):
        noise_sweep(PROMPT, model=tiny[0][family], target=TARGET, component="pattern", levels=[0.5])


def test_noisy_logits_refuses_a_list_of_levels_by_name(tiny):
    with pytest.raises(ValueError, match="level must be a single value"):
        noisy_logits(PROMPT, model=tiny[0]["gpt2"], target=TARGET, component="mlp_out", layers=[0], level=[0.5, 1.0])


def test_read_prediction_by_hand_including_ties():
    from compare.engine.prediction import read_prediction

    logits = torch.tensor([[1.0, 3.0, 3.0], [5.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    read = read_prediction(logits, target=1)
    np.testing.assert_array_equal(read["predicted_id"], [1, 0, 0])  # ties go to the first index
    np.testing.assert_array_equal(read["logit_diff"], [0.0, -4.0, 0.0])  # a tied other counts as best
    e = np.exp(1.0)
    np.testing.assert_allclose(read["p_target"], [e**3 / (e + 2 * e**3), e / (e**5 + e + e**2), 1 / 3], rtol=1e-6)


@pytest.mark.parametrize("family,component", [("mamba", "h"), ("mamba", "delta"), ("gpt2", "resid_post"),
                                              ("pythia", "resid_pre")])
def test_noise_that_overflows_the_logits_is_reported_not_read_as_token_0(tiny, family, component):
    from compare.engine.prediction import OverflowRunsWarning

    with pytest.warns(OverflowRunsWarning, match=r"1 of 2 runs overflowed"):
        df = noise_sweep(PROMPT, model=tiny[0][family], target=TARGET, component=component, layers=[0],
                         levels=[0, 1e38], scale="absolute")
    assert df["finite"].tolist() == [True, False] and df.attrs["overflowed"] == 1
    assert df["predicted_id"].iloc[1] == -1 and not df["hit"].iloc[1]  # not token 0


def test_a_ray_scales_one_epsilon_and_fresh_draws_do_not():
    """Rays: the ε of (seed, layer, trial) at every level. Fresh: one per level index, each
    different from the others and from every ray (SeedSequence pads with zeros: [s, l, t] and
    [s, l, t, 0] would be one seed)."""
    def eps(**kw):
        return draw_noise((64,), seed=1, layer=2, distribution="gaussian", **kw)

    fresh = [eps(trial=0, level_index=k) for k in range(3)]
    rays = [eps(trial=t) for t in range(3)]
    assert not any(torch.equal(r, f) for r in rays for f in fresh)
    assert not torch.equal(fresh[0], fresh[1]) and not torch.equal(fresh[1], fresh[2])
    assert torch.equal(fresh[1], eps(trial=0, level_index=1))


@pytest.mark.parametrize("component", ["resid_post", "delta"])  # the affine restart and the hooked forward
def test_fresh_draws_give_each_level_its_own_epsilon(tiny, component):
    kw = dict(model=tiny[0]["mamba"], target=TARGET, component=component, layers=[0], trials=2, seed=4)
    fresh = noise_sweep(PROMPT, levels=[0.6, 0.6, 0.6], draws="fresh", **kw)
    ray = noise_sweep(PROMPT, levels=[0.6, 0.6, 0.6], draws="ray", **kw)
    assert fresh.attrs["draws"] == "fresh" and ray.attrs["draws"] == "ray"
    # a ray repeats itself at a repeated level; fresh draws differ between level indices
    assert ray.groupby("trial")["p_target"].nunique().eq(1).all()
    assert fresh.groupby("trial")["p_target"].nunique().eq(3).all()
    alone = noise_sweep(PROMPT, levels=[0.6], draws="fresh", **kw)  # level index 0's ε
    np.testing.assert_allclose(fresh["p_target"].iloc[:2], alone["p_target"], atol=1e-6)


def test_fresh_draws_do_not_depend_on_chunking(tiny, monkeypatch):
    kw = dict(model=tiny[0]["mamba"], target=TARGET, component="h", trials=3, seed=7, levels=[0.0, 0.4, 1.5, 2.0])
    whole = noise_sweep(PROMPT, **kw)
    small = noise_sweep(PROMPT, max_bytes=400_000, **kw)  # a few responses held at a time
    monkeypatch.setattr("compare.analyses.noise.READ_ROWS", 5)
    in_blocks = noise_sweep(PROMPT, **kw)
    np.testing.assert_allclose(whole["p_target"], small["p_target"], atol=1e-6)
    np.testing.assert_allclose(whole["p_target"], in_blocks["p_target"], atol=1e-6)


@pytest.mark.parametrize("draws", DRAWS)
def test_noisy_logits_is_the_sweeps_run_at_that_level(tiny, draws):
    handle = tiny[0]["gpt2"]
    kw = dict(model=handle, target=TARGET, component="mlp_out", seed=2, draws=draws)
    df = noisy_logits(PROMPT, layers=[1], level=1.5, trial=1, **kw)
    noisy = torch.tensor(df[df["run"] == "noisy"]["logit"].to_numpy())
    sweep = noise_sweep(PROMPT, layers=[1], levels=[1.5], trials=2, **kw)
    assert torch.softmax(noisy, -1)[_target_id(handle)].item() == pytest.approx(sweep["p_target"].iloc[1], abs=TOL)


def test_negative_layers_count_from_the_end_as_in_patch_sweep(tiny):
    handle = tiny[0]["mamba"]
    kw = dict(model=handle, target=5, component="h", levels=[0.0, 3.0], trials=2, seed=1)
    last = noise_sweep([2, 3, 4, 5], layers=[handle.n_layers - 1], **kw)
    by_negative = noise_sweep([2, 3, 4, 5], layers=[-1], **kw)
    pd.testing.assert_frame_equal(by_negative, last)
