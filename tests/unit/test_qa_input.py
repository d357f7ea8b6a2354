"""Bad input found by a new user's pass over the public API: each is refused before any work with a
ValueError/TypeError that names the argument, or (numpy integers) read as the number it is."""
from __future__ import annotations

import numpy as np
import pytest

import compare
from compare import causal_trace, channel_sensitivity, noise_sweep, patch_sweep

PROMPT = "When Mary and John went to the store , John gave a drink to"
CORRUPT = "When Mary and John went to the store , Mary gave a drink to"
LONE = "When Mary \ud800 went"  # a lone surrogate: a str Python allows, but not text (no UTF-8 for it)


@pytest.fixture(scope="module")
def models(tiny):
    handles, _ = tiny
    return handles["mamba"], handles["gpt2"]


# --- lone surrogates: the tokenizers raised "TypeError: TextEncodeInput must be Union[...]" -----

@pytest.mark.parametrize("call, argument", [
    (lambda m, g: compare.compare(LONE, (m, g), progress=False), "prompt"),
    (lambda m, g: compare.compare(PROMPT, (m, g), track="\udc80", progress=False), "track"),
    (lambda m, g: noise_sweep(LONE, model=m, target=" Mary", component="h", levels=[0.1]), "prompt"),
    (lambda m, g: noise_sweep(PROMPT, model=m, target="\ud800", component="h", levels=[0.1]), "target"),
    (lambda m, g: patch_sweep(PROMPT, CORRUPT, model=g, answer="\ud800", component="resid_post"), "answer"),
])
def test_a_lone_surrogate_is_refused_naming_the_argument(models, call, argument):
    with pytest.raises(ValueError, match=rf"{argument}: .*lone surrogate U\+D[89A-F][0-9A-F]{{2}}.*valid Unicode"):
        call(*models)


# --- compare's arguments --------------------------------------------------------------------------

def test_compare_says_why_a_whitespace_prompt_is_refused(models):
    # it said "must be a non-empty string" of a string that is not empty
    with pytest.raises(ValueError, match=r"prompt: must hold text other than whitespace, got ' \\t\\n'"):
        compare.compare(" \t\n", models, progress=False)


def test_compare_refuses_an_unknown_dtype_even_for_loaded_models(models):
    # only sources are loaded in dtype, but a typo there was silently ignored with handles
    with pytest.raises(ValueError, match="dtype must be one of float32, float16, bfloat16, got 'float64'"):
        compare.compare(PROMPT, models, dtype="float64", progress=False)


def test_compare_refuses_a_non_bool_tokenizer_stats(models):
    with pytest.raises(TypeError, match="tokenizer_stats: must be True or False, got 'no'"):
        compare.compare(PROMPT, models, tokenizer_stats="no", progress=False)


def test_compare_takes_a_numpy_integer_batch_size(models):
    suite = [PROMPT, "the cat runs"]
    by_numpy = compare.compare(suite, models, batch_size=np.int64(1), progress=False)
    by_int = compare.compare(suite, models, batch_size=1, progress=False)
    for a, b in zip(by_numpy, by_int):
        for name in a.runs:
            np.testing.assert_array_equal(a.runs[name].logits, b.runs[name].logits)


def test_compare_with_one_model_handle_says_so_briefly(models):
    with pytest.raises(TypeError, match=r"models: .*got one Model \('mamba'\); pass a list") as err:
        compare.compare(PROMPT, models[0])
    assert len(str(err.value)) < 300  # not the module tree's repr


# --- sweeps ---------------------------------------------------------------------------------------

def test_noise_sweep_refuses_a_float_layer_naming_layers(models):
    with pytest.raises(ValueError, match=r"layers must be ints in 0\.\.1 for mamba or None for all, got 0\.5"):
        noise_sweep(PROMPT, model=models[0], target=" Mary", component="h", layers=0.5, levels=[0.1])


@pytest.mark.parametrize("levels, message", [([True, False], r"levels\[0\]: must be a finite number ≥ 0, got True"),
                                             ("0.5", r"levels: must be a non-empty list of finite numbers ≥ 0, got '0\.5'"),
                                             (["0.5"], r"levels\[0\]: must be a finite number ≥ 0, got '0\.5'")])
def test_noise_levels_must_be_numbers_not_bools_or_strings(models, levels, message):
    with pytest.raises(ValueError, match=message):
        noise_sweep(PROMPT, model=models[0], target=" Mary", component="h", layers=[0], levels=levels)


def test_channel_sensitivity_refuses_a_string_level(models):
    with pytest.raises(ValueError, match="level"):
        channel_sensitivity(PROMPT, model=models[0], target=" Mary", component="h", layer=0, level="0.5")


CALLS_WITH_MAX_BYTES = {
    "noise_sweep": lambda m, g, b: noise_sweep(PROMPT, model=m, target=" Mary", component="h", layers=[0],
                                               levels=[0.1], max_bytes=b),
    "channel_sensitivity": lambda m, g, b: channel_sensitivity(PROMPT, model=m, target=" Mary", component="h",
                                                               layer=0, level=0.1, trials=1, max_bytes=b),
    "patch_sweep": lambda m, g, b: patch_sweep(PROMPT, CORRUPT, model=g, answer=" Mary", wrong=" John",
                                               component="resid_post", layers=[0], max_bytes=b),
    "causal_trace": lambda m, g, b: causal_trace(PROMPT, "Mary", model=m, samples=1, max_bytes=b),
    "attention_map": lambda m, g, b: compare.attention_map(PROMPT, model=m, layer=0, max_bytes=b),
}


@pytest.mark.parametrize("max_bytes", [0, -1, True, 1.5, "1e9"])
@pytest.mark.parametrize("name", list(CALLS_WITH_MAX_BYTES))
def test_max_bytes_must_be_a_positive_int(models, name, max_bytes):
    # 0 and -1 read "needs about 0 MiB, more than max_bytes=0 MiB"; a string raised a bare TypeError
    with pytest.raises(ValueError, match=r"max_bytes: must be an integer number of bytes ≥ 1"):
        CALLS_WITH_MAX_BYTES[name](*models, max_bytes)


def test_max_bytes_takes_a_numpy_integer(models):
    a = noise_sweep(PROMPT, model=models[0], target=" Mary", component="h", layers=[0], levels=[0.5],
                    max_bytes=np.int64(2**30))
    b = noise_sweep(PROMPT, model=models[0], target=" Mary", component="h", layers=[0], levels=[0.5])
    assert a.equals(b)


def test_causal_trace_takes_a_numpy_integer_noise(models):
    a = causal_trace(PROMPT, "Mary", model=models[0], samples=2, noise=np.int64(3))
    b = causal_trace(PROMPT, "Mary", model=models[0], samples=2, noise=3.0)
    np.testing.assert_array_equal(a["p_restored"], b["p_restored"])
