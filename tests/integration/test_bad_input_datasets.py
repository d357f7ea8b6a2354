"""`datasets_gen.build` refuses input that would otherwise be read silently wrong.

Booleans are ints in Python, a string is a sequence of characters and a size is unbounded unless
someone bounds it: each test gives one such input and expects either the obvious reading or a
ValueError/TypeError naming the argument. Where the unfixed code would generate a huge suite, the
generator is replaced by one that fails at once, so a missing bound fails fast instead of hanging.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import shared_tokenizer
from datasets_gen import CustomConfig, MonotoneConfig, PeriodicConfig, RepeatedRandomConfig, build
from datasets_gen import suites as suites_module


@pytest.fixture(scope="module")
def tokenizers():
    return {"mamba": shared_tokenizer("gpt-neox-20b"), "gpt2": shared_tokenizer("gpt2")}


@pytest.fixture
def no_huge_suites(monkeypatch):
    """Make the unbounded parts of the generators fail at once instead of running for hours."""
    def refuse(*args, **kwargs):
        raise AssertionError("the generator ran: the size was not bounded before generating")

    monkeypatch.setattr(suites_module, "sane_token", refuse)
    monkeypatch.setattr(suites_module, "repeat", refuse)


def params(split):
    return json.loads(split[0]["params"])


def test_a_boolean_seed_is_refused(tokenizers):
    with pytest.raises(ValueError, match=r"seed: .*True"):
        build(seed=True, suites=[MonotoneConfig(n=1)], tokenizers=tokenizers)


def test_a_numpy_integer_seed_is_accepted_and_recorded_as_an_int(tokenizers):
    config = RepeatedRandomConfig(n=2, block_length=4)
    by_numpy = build(seed=np.int64(3), suites=[config], tokenizers=tokenizers)["repeated_random"]
    by_int = build(seed=3, suites=[config], tokenizers=tokenizers)["repeated_random"]
    assert by_numpy.to_list() == by_int.to_list()
    assert type(params(by_numpy)["seed"]) is int and params(by_numpy)["seed"] == 3


def test_a_boolean_size_is_refused(tokenizers):
    with pytest.raises(ValueError, match=r"sizes\['monotone'\]: .*True"):
        build(suites=["monotone"], sizes={"monotone": True}, tokenizers=tokenizers)


def test_a_numpy_integer_size_is_accepted(tokenizers):
    split = build(suites=["monotone"], sizes={"monotone": np.int64(2)}, tokenizers=tokenizers)["monotone"]
    assert split.num_rows == 2 and params(split)["config"]["n"] == 2


def test_a_boolean_config_count_is_refused(tokenizers):
    with pytest.raises(ValueError, match=r"monotone\.n: .*True"):
        build(suites=[MonotoneConfig(n=True)], tokenizers=tokenizers)
    with pytest.raises(ValueError, match=r"monotone\.length: .*True"):
        build(suites=[MonotoneConfig(n=1, length=True)], tokenizers=tokenizers)


@pytest.mark.parametrize("kwargs, match", [
    ({"suites": ["monotone"], "sizes": {"monotone": 10**9}}, r"sizes\['monotone'\]: .*100,?000"),
    ({"suites": [MonotoneConfig(n=10**9)]}, r"monotone\.n: .*100,?000"),
    ({"suites": [PeriodicConfig(n=1, cycles=((42, 69),), length=10**8)]}, r"periodic\.length: .*65,?536"),
    ({"suites": [PeriodicConfig(n=1, cycles=(), period=10**8)]}, r"periodic\.period: .*65,?536"),
    ({"suites": [RepeatedRandomConfig(n=1, block_length=10**8)]}, r"repeated_random\.block_length: .*32,?768"),
], ids=["size", "config-n", "periodic-length", "periodic-period", "block-length"])
def test_unbounded_sizes_are_refused_naming_the_bound(kwargs, match, tokenizers, no_huge_suites):
    with pytest.raises(ValueError, match=match):
        build(tokenizers=tokenizers, **kwargs)


def test_a_custom_text_longer_than_the_bound_is_refused(tokenizers):
    with pytest.raises(ValueError, match=r"custom\.texts\[0\]: .*65,?536"):
        build(suites=[CustomConfig(texts=("a " * 70_000,))], tokenizers=tokenizers)


def test_a_custom_text_with_a_lone_surrogate_is_refused_naming_the_row(tokenizers):
    # the tokenizer raised "TypeError: TextInputSequence must be str", naming nothing
    with pytest.raises(ValueError, match=r"custom\.texts\[1\]: .*lone surrogate U\+D800"):
        build(suites=[CustomConfig(texts=("ok", "a\ud800b"))], tokenizers=tokenizers)


def test_a_one_token_string_with_a_lone_surrogate_is_refused_naming_the_field(tokenizers):
    with pytest.raises(ValueError, match=r"monotone\.tokens.*lone surrogate U\+DC80"):
        build(suites=[MonotoneConfig(n=1, tokens=("\udc80",))], tokenizers=tokenizers)


def test_an_empty_custom_text_is_refused_naming_the_row(tokenizers):
    with pytest.raises(ValueError, match=r"custom\.texts\[1\]: empty"):
        build(suites=[CustomConfig(texts=("ok", ""))], tokenizers=tokenizers)


def test_a_single_suite_name_is_one_suite_not_its_letters(tokenizers):
    dataset = build(suites="monotone", sizes={"monotone": 1}, tokenizers=tokenizers)
    assert list(dataset) == ["monotone"]


def test_a_single_suite_config_is_one_suite(tokenizers):
    assert list(build(suites=MonotoneConfig(n=1), tokenizers=tokenizers)) == ["monotone"]


def test_no_suites_at_all_is_refused(tokenizers):
    with pytest.raises(ValueError, match=r"suites: empty"):
        build(suites=[], tokenizers=tokenizers)


def test_sizes_that_are_not_a_mapping_are_refused(tokenizers):
    with pytest.raises(TypeError, match=r"sizes: .*mapping"):
        build(suites=["monotone"], sizes=5, tokenizers=tokenizers)


@pytest.mark.parametrize("config, match", [
    (MonotoneConfig(n=1, tokens="123"), r"monotone\.tokens: .*str"),
    (PeriodicConfig(n=1, cycles=(42, 69)), r"periodic\.cycles\[0\]: .*42"),
    (CustomConfig(texts="hello"), r"custom\.texts: .*str"),
    (CustomConfig(texts=(3,)), r"custom\.texts\[0\]: .*3"),
    (CustomConfig(ids=(42, 69)), r"custom\.ids\[0\]: .*42"),
    (CustomConfig(ids=((True, 69),)), r"custom\.ids\[0\]: .*True"),
], ids=["tokens-str", "cycles-flat", "texts-str", "texts-int", "ids-flat", "ids-bool"])
def test_a_sequence_of_the_wrong_shape_is_refused_naming_the_field(config, match, tokenizers):
    with pytest.raises((TypeError, ValueError), match=match):
        build(suites=[config], tokenizers=tokenizers)


def test_numpy_integers_inside_a_config_are_stored_as_plain_numbers(tokenizers):
    config = PeriodicConfig(n=np.int64(1), cycles=((np.int64(42), 69),), length=np.int64(4))
    split = build(suites=[config], tokenizers=tokenizers)["periodic"]
    assert split[0]["mamba_same_ids_ids"] == [42, 69, 42, 69]
    assert params(split)["config"] == {"n": 1, "cycles": [[42, 69]], "period": 2, "length": 4,
                                       "source": "mamba"}
