"""Suites and alignment against the real tokenizers in ../shared/tokenizers.

Expected values come from the tokenizers README's oracle facts or from the tokenizers themselves,
loaded as the README shows (not through `datasets_gen`), and hand-written layouts.
"""

from pathlib import Path

import pytest

from conftest import SHARED_TOKENIZERS as TOKENIZERS
if not TOKENIZERS.is_dir():
    pytest.skip(f"real tokenizers not found at {TOKENIZERS.resolve()}", allow_module_level=True)

from tokenizers import ByteLevelBPETokenizer  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

import datasets_gen  # noqa: E402
from datasets_gen import (  # noqa: E402
    CustomConfig,
    MonotoneConfig,
    NaturalConfig,
    PeriodicConfig,
    RepeatedRandomConfig,
    align,
    build,
)

PATHS = {"mamba": str(TOKENIZERS / "gpt-neox-20b"), "gpt2": str(TOKENIZERS / "gpt2")}
CLASSIC = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def neox():
    return PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZERS / "gpt-neox-20b/tokenizer.json"))


@pytest.fixture(scope="module")
def gpt2():
    return PreTrainedTokenizerFast(tokenizer_object=ByteLevelBPETokenizer(
        str(TOKENIZERS / "gpt2/vocab.json"), str(TOKENIZERS / "gpt2/merges.txt")))


def one(config, seed=0):
    """The single split built from `config` with the real tokenizers."""
    return build(seed=seed, suites=[config], tokenizers=PATHS)[config.name]


def test_classic_ioi_prompt_is_14_tokens_in_both_with_target_mary():
    r = one(NaturalConfig(n=1))[0]
    assert r["text"] == CLASSIC
    assert len(r["mamba_native_ids"]) == len(r["gpt2_native_ids"]) == 14
    assert r["target"] == " Mary"
    assert (r["target_id_mamba"], r["target_id_gpt2"]) == (6393, 5335)
    assert not r["flagged"]


def test_natural_prompts_target_the_indirect_object_in_both_orders():
    rows = one(NaturalConfig(n=12)).to_list()
    orders = set()
    for r in rows:
        io = r["target"].strip()
        before_gave = r["text"].split(" gave")[0]
        assert before_gave.count(io) == 1, r["text"]  # the IO is named once, the subject twice
        first_name = r["text"].split(" and ")[0].split()[-1]
        orders.add("ABBA" if first_name == io else "BABA")
        assert r["text"].endswith(" to")
    assert orders == {"ABBA", "BABA"}


def test_natural_names_are_single_tokens_in_both_tokenizers(neox, gpt2):
    for r in one(NaturalConfig(n=8)):
        name = r["target"]
        assert len(neox.encode(name, add_special_tokens=False)) == 1
        assert len(gpt2.encode(name, add_special_tokens=False)) == 1


def test_a_name_that_is_not_single_token_is_rejected_naming_the_field():
    with pytest.raises(ValueError, match=r"natural\.names.*' Xylophonista' is 5 tokens.*one token"):
        one(NaturalConfig(n=2, names=("Mary", "Xylophonista")))


def test_align_reproduces_the_issue_example():
    aligned = align([42, 69], PATHS["mamba"], PATHS["gpt2"])
    assert aligned.ids == [40, 67]
    assert aligned.flags == [False, False]
    assert not aligned.flagged


def test_align_records_the_split_of_a_token_without_counterpart(neox, gpt2):
    (source_id,) = neox.encode("0040", add_special_tokens=False)
    expected = gpt2.encode("0040", add_special_tokens=False)
    assert len(expected) == 2  # the premise: GPT-2 has no single "0040"
    aligned = align([42, source_id, 69], PATHS["mamba"], PATHS["gpt2"])
    assert aligned.ids == [40, *expected, 67]
    assert aligned.flags == [False, True, False]
    assert aligned.pieces == [[40], expected, [67]]


def test_align_accepts_tokenizer_objects(neox, gpt2):
    assert align([42, 69], neox, gpt2).ids == [40, 67]


def test_monotone_123_is_14_identical_tokens_in_both(neox, gpt2):
    r = one(MonotoneConfig(n=1, tokens=("123",), length=14))[0]
    (m,) = neox.encode("123", add_special_tokens=False)
    (g,) = gpt2.encode("123", add_special_tokens=False)
    assert r["text"] == "123" * 14
    assert r["mamba_same_ids_ids"] == r["mamba_native_ids"] == [m] * 14
    assert r["gpt2_native_ids"] == r["gpt2_aligned_ids"] == [g] * 14
    assert r["gpt2_same_ids_ids"] == [m] * 14
    assert (r["target"], r["target_id_mamba"], r["target_id_gpt2"]) == ("123", m, g)


def test_periodic_layout_same_ids_and_aligned():
    r = one(PeriodicConfig(n=1, cycles=((42, 69),), length=5))[0]
    assert r["mamba_same_ids_ids"] == r["gpt2_same_ids_ids"] == [42, 69, 42, 69, 42]
    assert r["mamba_same_ids_tokens"] == ["I", "d", "I", "d", "I"]
    assert r["gpt2_same_ids_tokens"] == ["K", "f", "K", "f", "K"]
    assert r["gpt2_aligned_ids"] == [40, 67, 40, 67, 40]
    assert r["gpt2_aligned_split"] == [1] * 5
    assert (r["target"], r["target_id_mamba"], r["target_id_gpt2"]) == ("d", 69, 67)


def test_periodic_cycles_may_be_given_as_strings():
    by_id = one(PeriodicConfig(n=2, cycles=((42, 69), (4200, 6660)), length=14))
    by_text = one(PeriodicConfig(n=1, cycles=(("I", "d"),), length=14))
    assert by_text[0]["mamba_same_ids_ids"] == [42, 69] * 7
    assert by_id[1]["mamba_same_ids_ids"] == [4200, 6660] * 7
    assert by_id[1]["target_id_mamba"] == 4200


def test_random_periodic_cycles_have_the_requested_period():
    r = one(PeriodicConfig(n=2, cycles=(), period=3, length=7))[1]
    ids = r["mamba_same_ids_ids"]
    assert ids[3:] == ids[:4] and len(set(ids[:3])) == 3
    assert r["target_id_mamba"] == ids[1]


def test_repeated_random_is_a_block_twice_and_targets_its_first_token():
    rows = one(RepeatedRandomConfig(n=4, block_length=10))
    for r in rows:
        ids = r["mamba_same_ids_ids"]
        assert len(ids) == 20 and ids[:10] == ids[10:]
        assert r["target_id_mamba"] == ids[0]
        assert max(ids) < 50257  # valid as same_ids in GPT-2 too
        assert not r["flagged"]  # sane tokens are one token in both tokenizers


def test_random_suites_depend_only_on_the_seed():
    config = RepeatedRandomConfig(n=3, block_length=8)
    a, b, c = one(config, seed=1), one(config, seed=1), one(config, seed=2)
    assert a.to_list() == b.to_list()
    assert a["mamba_same_ids_ids"] != c["mamba_same_ids_ids"]


def test_custom_texts_and_ids_use_the_same_schema():
    split = one(CustomConfig(texts=(CLASSIC,), ids=((42, 69),)))
    assert split.features == datasets_gen.features()
    assert split[0]["gpt2_native_ids"][:2] == [2215, 5335]
    assert split[1]["gpt2_aligned_ids"] == [40, 67]
    assert split["target"] == ["", ""] and split["target_id_gpt2"] == [-1, -1]


def test_params_store_seed_config_and_version():
    import json
    from importlib.metadata import version

    params = json.loads(one(MonotoneConfig(n=2, length=3), seed=7)[0]["params"])
    assert params["seed"] == 7
    assert params["config"] == {"n": 2, "tokens": ["123"], "length": 3, "source": "mamba"}
    assert params["version"] == version("mamba-gpt2-compare")


@pytest.mark.parametrize("kwargs, match", [
    ({"suites": ["nope"]}, r"suites: unknown suite 'nope'; allowed values are \["),
    ({"sizes": {"natural": 0}}, r"sizes\['natural'\]: must be an integer ≥ 1"),
    ({"sizes": {"nope": 3}}, r"sizes: cannot size \['nope'\]; allowed keys"),
    ({"suites": [MonotoneConfig(length=0)]}, r"monotone\.length: must be an integer ≥ 1"),
    ({"suites": [PeriodicConfig(cycles=((42,),))]}, r"periodic\.cycles\[0\]: period 1.*≥ 2"),
    ({"suites": [PeriodicConfig(period=1)]}, r"periodic\.period: period 1.*≥ 2"),
    ({"suites": [CustomConfig(ids=((50270,),))]}, r"custom\.ids\[0\].*gpt2 vocabulary.*0\.\.50256"),
    ({"suites": [CustomConfig(ids=((60000,),))]}, r"custom\.ids\[0\].*mamba vocabulary.*0\.\.50276"),
    ({"suites": [MonotoneConfig(tokens=("1234567",))]}, r"monotone\.tokens\[0\].*one token"),
    ({"suites": [MonotoneConfig(source="llama")]}, r"source: unknown model 'llama'"),
    ({"tokenizers": {"llama": "x"}}, r"tokenizers: unknown keys \['llama'\]"),
    ({"seed": -1}, r"seed: must be an integer ≥ 0"),
])
def test_bad_input_names_the_field_and_allowed_values(kwargs, match):
    kwargs.setdefault("tokenizers", PATHS)
    with pytest.raises(ValueError, match=match):
        build(**kwargs)


def test_unreachable_hub_tokenizer_asks_for_a_local_path(monkeypatch):
    import transformers

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    with pytest.raises(RuntimeError, match="Pass a local path"):
        build(suites=["monotone"], tokenizers={"mamba": PATHS["mamba"]})


def test_tokenizer_objects_and_a_tokenizer_json_file_give_the_same_rows(neox, gpt2):
    config = PeriodicConfig(n=3, length=6)
    by_path = build(suites=[config], tokenizers=PATHS)["periodic"]
    by_object = build(suites=[config], tokenizers={
        "mamba": str(TOKENIZERS / "gpt-neox-20b" / "tokenizer.json"), "gpt2": gpt2})["periodic"]
    assert by_object.remove_columns("params").to_list() == \
        by_path.remove_columns("params").to_list()


def test_pythia_columns_copy_mambas_and_are_flagged_as_identical():
    import json

    split = one(CustomConfig(texts=(CLASSIC, "I ❤ 🐍"), ids=((42, 69),)))
    mamba = {k: split[k] for k in split.column_names if k.startswith("mamba_") or k == "target_id_mamba"}
    # 3 variants × (ids, tokens) + aligned split, flags, flagged, target ID + 2 corrupt IDs, answer, wrong ID
    assert len(mamba) == 14
    for key, column in mamba.items():  # Pythia and Mamba-2 read Mamba's GPT-NeoX-20B
        assert split[key.replace("mamba", "pythia", 1)] == column
        assert split[key.replace("mamba", "mamba2", 1)] == column
    assert json.loads(split[0]["params"])["identical"] == {"pythia": "mamba", "mamba2": "mamba"}
    # the hybrids read vocabularies of their own, not the suite's two tokenizers: no columns
    assert set(datasets_gen.FAMILIES) == {"mamba", "mamba2", "gpt2", "pythia"}


def test_a_tokenizer_for_pythia_is_refused_naming_the_family_it_reads():
    with pytest.raises(ValueError, match=r"tokenizers: 'pythia' reads the 'mamba' tokenizer.*give the tokenizer as 'mamba'"):
        build(suites=["monotone"], tokenizers={**PATHS, "pythia": PATHS["mamba"]})
