"""causal_trace: equal to the one-trace-per-restoration reference on every family; restoring the final
residual at the last position is the clean run; no noise, no effect; subjects and bad arguments."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from compare.analyses.causal_trace import COLUMNS, causal_trace, subject_positions
from compare.analyses.causal_trace_ref import causal_trace_ref

PROMPT = "When Mary and John went to the store , John gave a drink to"
TOL = 1e-5


@pytest.mark.parametrize("family,component,window", [
    ("mamba", "resid_post", 1), ("mamba", "h", 3), ("gpt2", "resid_post", 1), ("gpt2", "mlp_out", 2),
    ("pythia", "resid_post", 1), ("pythia", "attn_out", 3)])
def test_batched_equals_the_one_trace_per_restoration_reference(tiny, family, component, window):
    kw = dict(model=tiny[0][family], samples=3, window=window, component=component, seed=1)
    fast = causal_trace(PROMPT, "Mary and", **kw)
    ref = causal_trace_ref(PROMPT, "Mary and", **kw)
    assert list(fast.columns) == list(COLUMNS)
    assert fast[["layer", "position", "token"]].equals(ref[["layer", "position", "token"]])
    np.testing.assert_allclose(fast["p_restored"], ref["p_restored"], atol=TOL, rtol=0)
    np.testing.assert_allclose(fast["indirect_effect"], ref["indirect_effect"], atol=TOL, rtol=0)
    assert fast["indirect_effect"].abs().max() > 1e-3


@pytest.mark.parametrize("family", ["mamba", "gpt2", "pythia"])
def test_restoring_the_final_residual_at_the_last_position_is_the_clean_run(tiny, family):
    handle = tiny[0][family]
    df = causal_trace(PROMPT, "Mary", model=handle, samples=4)
    last = df[df["layer"] == handle.n_layers - 1].set_index("position")["p_restored"]
    p_clean = torch.softmax(handle.logits(handle.encode(PROMPT))[0, -1], -1).max().item()
    assert last[13] == pytest.approx(p_clean, abs=TOL)
    assert df.attrs["p_clean"][handle.name] == p_clean
    # a position other than the last, in the last layer, reaches nothing: the corrupted run
    np.testing.assert_allclose(last[:12], df.attrs["p_corrupt"][handle.name], atol=TOL)


def test_no_noise_no_effect(tiny):
    handle = tiny[0]["pythia"]
    df = causal_trace(PROMPT, "John", model=handle, samples=2, noise=0.0)
    assert df.attrs["p_corrupt"][handle.name] == pytest.approx(df.attrs["p_clean"][handle.name], abs=TOL)
    assert df["indirect_effect"].abs().max() < TOL


def test_the_seed_picks_the_draws(tiny):
    handle = tiny[0]["gpt2"]
    runs = [causal_trace(PROMPT, "Mary", model=handle, samples=2, seed=s).attrs["p_corrupt"]["gpt2"] for s in (0, 0, 1)]
    assert runs[0] == runs[1] != runs[2]


def test_subject_positions(tiny):
    handle = tiny[0]["gpt2"]
    ids = handle.as_input(handle.encode(PROMPT))
    assert subject_positions(handle, ids, "Mary") == (1,)
    assert subject_positions(handle, ids, "Mary and John") == (1, 2, 3)
    assert subject_positions(handle, ids, "ry an") == (1, 2)  # every token the substring overlaps
    assert subject_positions(handle, ids, [-1, 3]) == (3, 13)


@pytest.mark.parametrize("kwargs,message", [
    (dict(subject="Paul"), r"subject 'Paul' is not in the prompt as gpt2 tokenizes it"),
    (dict(subject=[14]), r"subject must be a non-empty list of token positions in -14\.\.13"),
    (dict(samples=0), r"samples: must be an integer ≥ 1, got 0"),
    (dict(window=1.5), r"window: must be an integer ≥ 1, got 1\.5"),
    (dict(noise=-1), r"noise: must be a finite number ≥ 0, got -1"),
    (dict(seed=-2), r"seed: must be an integer ≥ 0, got -2"),
    (dict(component="pattern"), r"component 'pattern' cannot be restored; valid: resid_pre"),
    (dict(answer=" Mary Mary"), r"answer: ' Mary Mary' is 2 tokens"),
    (dict(stop=object()), r"stop: must have an is_set\(\) method"),
])
def test_bad_arguments(tiny, kwargs, message):
    kw = dict(subject="Mary", model=tiny[0]["gpt2"], samples=2)
    kw.update(kwargs)
    with pytest.raises(ValueError, match=message):
        causal_trace(PROMPT, kw.pop("subject"), **kw)
