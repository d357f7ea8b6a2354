"""One calling convention (STYLE rule 23, `compare.engine.convention`): every analysis takes `model=`
one model or a list, and `dtype=`, `device=`, `progress=`, `stop=` the same way.

The reference of a list of two models is the two single calls, concatenated."""
from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from compare.analyses.noise import noisy_logits
from compare import (attention_map, attribution_patch, causal_trace, channel_sensitivity, compare, head_pattern,
                     hidden_attention, knockout, logit_lens, noise_sweep, patch_sweep, phase_transition)

PROMPT = "When Mary and John went to the store , John gave a drink to"
CORRUPT = "When Mary and John went to the store , Mary gave a drink to"
PAIR = ("mamba", "gpt2")

# each analysis with the arguments of a small call (no `model`)
CALLS = {
    "noise_sweep": (noise_sweep, (PROMPT,), dict(target=" Mary", layers=[0, 1], levels=[0.0, 0.5, 3.0], trials=2)),
    "noisy_logits": (noisy_logits, (PROMPT,), dict(target=" Mary", layers=[1], level=0.5)),
    "channel_sensitivity": (channel_sensitivity, (PROMPT,), dict(target=" Mary", component="resid_post", layer=1,
                                                                 level=2.0, trials=2)),
    "patch_sweep": (patch_sweep, (PROMPT, CORRUPT), dict(answer=" John", wrong=" Mary", positions=[-5, -1])),
    "causal_trace": (causal_trace, (PROMPT, "Mary"), dict(samples=2)),
    "knockout": (knockout, (PROMPT,), dict(sources=[1], target=-1, layers=[0])),
    "logit_lens": (logit_lens, (PROMPT,), dict(positions=[-1], k=3)),
    "attribution_patch": (attribution_patch, (PROMPT, CORRUPT), dict(answer=" John", wrong=" Mary",
                                                                     components=["resid_post"], positions=[-5, -1])),
    "attention_map": (attention_map, (PROMPT,), dict(layer=1)),
}


def _frame_equal(got: pd.DataFrame, want: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True), check_dtype=False)


@pytest.mark.parametrize("name", CALLS)
def test_a_list_of_two_models_is_the_two_single_calls_side_by_side(tiny, name):
    fn, args, kw = CALLS[name]
    a, b = (tiny[0][m] for m in PAIR)
    one, two = fn(*args, model=a, **kw), fn(*args, model=b, **kw)
    both = fn(*args, model=[a, b], **kw)
    if isinstance(one, pd.DataFrame):
        _frame_equal(both, pd.concat([one, two], ignore_index=True))
        assert list(both["model"].unique()) == [a.name, b.name]
        assert set(both.attrs["by_model"]) == {a.name, b.name}
    else:  # one object per model (attention maps)
        assert [m.model for m in both] == [a.name, b.name]
        for got, want in zip(both, (one, two)):
            np.testing.assert_array_equal(got.weights, want.weights)
            assert (got.kind, got.tokens, got.units) == (want.kind, want.tokens, want.units)


def test_component_defaults_from_the_family(tiny):
    """component=None is `Family.default_component`: "h" on Mamba, "resid_post" on GPT-2."""
    a, b = tiny[0]["mamba"], tiny[0]["gpt2"]
    df = noise_sweep(PROMPT, model=[a, b], target=" Mary", layers=[0], levels=[0.5])
    assert dict(zip(df["model"], df["component"])) == {a.name: "h", b.name: "resid_post"}
    explicit = noise_sweep(PROMPT, model=a, target=" Mary", component="h", layers=[0], levels=[0.5])
    _frame_equal(df[df["model"] == a.name], explicit)
    patched = patch_sweep(PROMPT, CORRUPT, model=b, answer=" John", wrong=" Mary", positions=[-1])
    assert set(patched["component"]) == {"resid_post"}


def test_phase_transition_over_a_two_model_sweep(tiny):
    """A two-model sweep frame feeds phase_transition end to end: the same fits as each model's own."""
    a, b = tiny[0]["mamba"], tiny[0]["gpt2"]
    kw = dict(target=" Mary", layers=[0, 1], levels=[0.0, 0.3, 1.0, 3.0, 10.0], trials=2)
    both = noise_sweep(PROMPT, model=[a, b], **kw)
    assert both.attrs["draws"] == "fresh" and set(both.attrs["by_model"]) == {a.name, b.name}
    fits = phase_transition(both, n_boot=20)
    singles = {m.name: phase_transition(noise_sweep(PROMPT, model=m, **kw), n_boot=20) for m in (a, b)}
    assert sorted(fits["model"].unique()) == sorted(singles)
    # the fits of each model are its own; the bootstrap's generator runs on through the groups in
    # sorted order, so the intervals agree in full for the first model, the point estimates for all
    point = ["model", "layer", "kind", "component", "critical_level", "n", "overflowed"]
    for name, single in singles.items():
        _frame_equal(fits[fits["model"] == name][point], single[point])
    first = min(singles)
    _frame_equal(fits[fits["model"] == first], singles[first])


def test_sources_dtype_and_device_are_accepted_everywhere(tiny, tiny_dirs):
    dirs = tiny_dirs[0]
    for name, (fn, args, kw) in CALLS.items():
        by_source = fn(*args, model=[str(dirs[m]) for m in PAIR], dtype="float32", device="cpu", **kw)
        by_handle = fn(*args, model=[tiny[0][m] for m in PAIR], **kw)
        if isinstance(by_source, pd.DataFrame):
            _frame_equal(by_source, by_handle)
        else:
            assert [m.model for m in by_source] == [m.model for m in by_handle]
    c = compare(PROMPT, model=[str(dirs[m]) for m in PAIR], device="cpu", dtype="float32", progress=False)
    assert list(c.runs) == [dirs[m].name for m in PAIR]


@pytest.mark.parametrize("name", CALLS)
def test_bad_convention_values_are_refused_naming_the_argument(tiny, name):
    fn, args, kw = CALLS[name]
    handle = tiny[0]["gpt2"]
    with pytest.raises(ValueError, match="dtype"):
        fn(*args, model=handle, dtype="float64", **kw)
    with pytest.raises(ValueError, match="dtype"):
        fn(*args, model=handle, dtype="bfloat16", **kw)  # a loaded handle keeps its own
    with pytest.raises(ValueError, match="device"):
        fn(*args, model=handle, device="gpu", **kw)
    with pytest.raises(ValueError, match="device"):
        fn(*args, model=handle, device="meta", **kw)  # a loaded handle keeps its own
    with pytest.raises(ValueError, match="progress"):
        fn(*args, model=handle, progress="yes", **kw)
    with pytest.raises(ValueError, match="stop"):
        fn(*args, model=handle, stop=True, **kw)
    with pytest.raises(ValueError, match="model"):
        fn(*args, model=[], **kw)
    with pytest.raises(ValueError, match="model"):
        fn(*args, model=[handle, handle], **kw)
    with pytest.raises(ValueError, match="model"):
        fn(*args, model=3, **kw)


def test_compare_takes_model_as_well_as_models(tiny):
    a, b = tiny[0]["mamba"], tiny[0]["gpt2"]
    by_keyword = compare(PROMPT, model=[a, b], progress=False)
    positional = compare(PROMPT, [a, b], progress=False)
    _frame_equal(by_keyword.to_frame(), positional.to_frame())
    with pytest.raises(ValueError, match="model"):
        compare(PROMPT, [a, b], model=[a, b])
    with pytest.raises(ValueError, match="device"):
        compare(PROMPT, model=[a, b], device="gpu")
    with pytest.raises(ValueError, match="progress"):
        compare(PROMPT, model=[a, b], progress="yes")
    seen = []
    compare([PROMPT, CORRUPT], model=[a, b], progress=lambda done, total: seen.append((done, total)), batch_size=1)
    assert seen == [(1, 2), (2, 2)]


def test_progress_and_stop_across_a_list(tiny):
    """progress counts up to its total across models; stop set before a call returns at once, and
    an analysis that does not count its own steps is stopped between models."""
    a, b = tiny[0]["mamba"], tiny[0]["gpt2"]
    seen = []
    noise_sweep(PROMPT, model=[a, b], target=" Mary", layers=[0, 1], levels=[0.5],
                progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (4, 4) and [d for d, _ in seen] == [1, 2, 3, 4]
    models = []
    knockout(PROMPT, model=[a, b], sources=[1], target=-1, layers=[0], progress=lambda d, t: models.append((d, t)))
    assert models == [(1, 2), (2, 2)]

    stop = threading.Event()

    def stop_after_first(done, total):
        stop.set()

    df = knockout(PROMPT, model=[a, b], sources=[1], target=-1, layers=[0], progress=stop_after_first, stop=stop)
    assert list(df["model"]) == [a.name] and df.attrs["stopped"] is True
    stop.set()
    swept = noise_sweep(PROMPT, model=[a, b], target=" Mary", layers=[0], levels=[0.5], stop=stop)
    assert swept.empty and swept.attrs["stopped"] is True


def test_hidden_attention_and_head_pattern_take_lists(tiny):
    a, b = tiny[0]["mamba"], tiny[0]["mamba_ssm"]
    maps = hidden_attention(PROMPT, model=[a, b], layer=0)
    for got, model in zip(maps, (a, b)):
        np.testing.assert_array_equal(got.weights, hidden_attention(PROMPT, model=model, layer=0).weights)
    g, p = tiny[0]["gpt2"], tiny[0]["pythia"]
    pats = head_pattern(PROMPT, model=[g, p], layer=1, dtype="float32", device="cpu")
    assert [m.model for m in pats] == [g.name, p.name]


def test_a_study_may_leave_component_to_the_family(tiny, tiny_dirs, tmp_path):
    """A study's noise_sweep without `component` runs each model on its family's default, the same
    rows as a direct call with that component and the task's seed."""
    import torch

    from compare import study

    dirs = tiny_dirs[0]
    spec = {"prompts": [PROMPT], "models": [str(dirs["mamba"]), str(dirs["gpt2"])], "seed": 7, "device": "cpu",
            "analyses": [{"analysis": "noise_sweep", "target": " Mary", "layers": [0], "levels": [0.0, 0.5]}]}
    summary = study.run(spec, tmp_path / "study", progress=False)
    assert summary.failed == []
    rows = study.read(tmp_path / "study", "noise_sweep")
    assert dict(zip(rows["model"], rows["component"])) == {"mamba": "h", "gpt2": "resid_post"}
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the study's default threads=1 (the count changes rounding)
    try:
        for name, component in (("mamba", "h"), ("gpt2", "resid_post")):
            key = f"noise_sweep/{name}/p000000"
            direct = noise_sweep(PROMPT, model=tiny[0][name], target=" Mary", component=component, layers=[0],
                                 levels=[0.0, 0.5], seed=study.task_seed(7, key))
            got = rows[rows["task"] == key].drop(columns=["task", "prompt_index", "seed", "draws"])
            _frame_equal(got[list(direct.columns)], direct)
    finally:
        torch.set_num_threads(previous)
