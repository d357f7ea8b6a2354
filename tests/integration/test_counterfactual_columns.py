"""The natural split's counterfactual columns (datasets_gen.build): ABC corruption and name swap per row,
answer and wrong answer as one token in every tokenizer, null in the other suites, the old columns untouched.

Expected values come from the real tokenizers loaded as their README shows (not through `datasets_gen`),
from the prompt text itself, or from the build before these columns existed (pinned below).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import SHARED_TOKENIZERS as TOKENIZERS
if not TOKENIZERS.is_dir():
    pytest.skip(f"real tokenizers not found at {TOKENIZERS.resolve()}", allow_module_level=True)

from tokenizers import ByteLevelBPETokenizer  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

import datasets_gen  # noqa: E402
from datasets_gen import NaturalConfig, build  # noqa: E402
from datasets_gen.suites import NAMES  # noqa: E402

PATHS = {"mamba": str(TOKENIZERS / "gpt-neox-20b"), "gpt2": str(TOKENIZERS / "gpt2")}
FAMILIES = ("mamba", "gpt2", "pythia")
KINDS = ("abc", "name_swap")
NEW = {"answer", "wrong", *(f"corrupt_{k}" for k in KINDS),
       *(f"{m}_{k}_ids" for m in FAMILIES for k in KINDS),
       *(f"{m}_{x}_id" for m in FAMILIES for x in ("answer", "wrong"))}
# sha256 of the natural split's rows (seed 0, the default 32 prompts, `params` left out) as built
# before the counterfactual columns (commit bacd361): adding them must not move a single value.
LATER_FAMILIES = {"mamba2"}  # registered after OLD_NATURAL_SHA256 was taken over mamba, gpt2 and pythia
OLD_NATURAL_SHA256 = "ba0181ad7b4c2dff00ff3e33b70aed326fa82379a0d444f5ed541e20406fe7fb"


@pytest.fixture(scope="module")
def tokenizers():
    neox = PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZERS / "gpt-neox-20b/tokenizer.json"))
    gpt2 = PreTrainedTokenizerFast(tokenizer_object=ByteLevelBPETokenizer(
        str(TOKENIZERS / "gpt2/vocab.json"), str(TOKENIZERS / "gpt2/merges.txt")))
    return {"mamba": neox, "gpt2": gpt2, "pythia": neox}  # Pythia reads GPT-NeoX-20B's tokenizer


@pytest.fixture(scope="module")
def suites():
    return build(seed=0, suites=["natural", "monotone"], tokenizers=PATHS)


@pytest.fixture(scope="module")
def natural(suites):
    return suites["natural"].to_list()


def s2(row):
    """The clean text split around its repeated subject: (before, " S", after)."""
    before, after = row["text"].rsplit(row["wrong"], 1)
    return before, row["wrong"], after


def test_every_split_has_the_counterfactual_columns_in_its_features(suites):
    assert NEW <= set(datasets_gen.features())
    for split in suites.values():
        assert split.features == datasets_gen.features()


def test_answer_and_wrong_are_one_token_in_every_tokenizer_and_decode_to_the_names(natural, tokenizers):
    for row in natural:
        assert row["answer"] == row["target"]
        assert row["answer"].strip() in NAMES and row["wrong"].strip() in NAMES
        assert row["answer"] != row["wrong"]
        for m, tok in tokenizers.items():
            for x in ("answer", "wrong"):
                assert tok.encode(row[x], add_special_tokens=False) == [row[f"{m}_{x}_id"]], (m, row[x])
                assert tok.decode([row[f"{m}_{x}_id"]]) == row[x]


def test_the_corrupt_texts_replace_the_repeated_subject(natural):
    for row in natural:
        before, _, after = s2(row)
        assert row["corrupt_name_swap"] == before + row["answer"] + after
        assert row["corrupt_abc"].startswith(before) and row["corrupt_abc"].endswith(after)
        third = row["corrupt_abc"][len(before):len(row["corrupt_abc"]) - len(after)]
        assert third.strip() in NAMES and third not in (row["answer"], row["wrong"])
        assert before.count(row["wrong"]) == 1 and before.count(row["answer"]) == 1  # S2 is the second S


def test_the_corrupt_ids_differ_from_the_clean_only_at_the_subject_with_the_same_length(natural, tokenizers):
    for row in natural:
        for m, tok in tokenizers.items():
            clean = row[f"{m}_native_ids"]
            s2_position = len(tok.encode(s2(row)[0], add_special_tokens=False))
            assert clean[s2_position] == row[f"{m}_wrong_id"]
            for k in KINDS:
                corrupt = row[f"{m}_{k}_ids"]
                assert corrupt == tok.encode(row[f"corrupt_{k}"], add_special_tokens=False)
                assert len(corrupt) == len(clean)
                assert [t for t in range(len(clean)) if clean[t] != corrupt[t]] == [s2_position]
            assert row[f"{m}_name_swap_ids"][s2_position] == row[f"{m}_answer_id"]
            assert row[f"{m}_abc_ids"][s2_position] not in (row[f"{m}_answer_id"], row[f"{m}_wrong_id"])


@pytest.mark.parametrize("copy", ["pythia", "mamba2"])  # both read GPT-NeoX-20B, Mamba's tokenizer
def test_counterfactual_columns_of_a_family_on_mambas_tokenizer_copy_mambas(natural, copy):
    for row in natural:
        for key in NEW:
            if key.startswith("mamba_"):
                assert row[key.replace("mamba", copy, 1)] == row[key]


def test_rows_of_other_suites_hold_nulls(suites):
    for row in suites["monotone"]:
        assert {row[key] for key in NEW} == {None}


def test_the_old_columns_of_the_natural_split_are_unchanged(natural):
    assert [r["text"] for r in natural[:4]] == [
        "When Mary and John went to the store, John gave a drink to",
        "Then, Mike and Jack had a long day at the hospital. Jack gave a drink to",
        "Then, Peter and James had a long day at the school. Peter gave a necklace to",
        "When Adam and Peter went to the station, Peter gave a kiss to"]
    # the columns of the families the hash was taken over; a family added since brings new columns
    old = [{k: v for k, v in r.items() if k not in NEW | {"params"} and not LATER_FAMILIES & set(k.split("_"))}
           for r in natural]
    assert hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest() == OLD_NATURAL_SHA256


def test_the_same_seed_gives_the_same_rows_and_another_seed_other_third_names(natural):
    again = build(seed=0, suites=["natural"], tokenizers=PATHS)["natural"].to_list()
    assert again == natural
    other = build(seed=1, suites=["natural"], tokenizers=PATHS)["natural"]
    assert other["corrupt_abc"] != [r["corrupt_abc"] for r in natural]


def test_a_natural_suite_without_a_third_name_is_refused_naming_the_names():
    with pytest.raises(ValueError, match=r"names: need a third name besides 'Mary' and 'John'"):
        build(suites=[NaturalConfig(n=2, names=("Mary", "John"))], tokenizers=PATHS)


def test_patch_sweep_runs_on_a_row_as_it_is(tiny):
    from compare.analyses.patching import patch_sweep
    from conftest import tiny_tokenizer

    tok = tiny_tokenizer()  # the tiny models' own: a word-level vocabulary, so "," stands apart
    config = NaturalConfig(n=3, names=("Mary", "John", "it", "he"), places=("store",), objects=("drink",),
                           templates=("When {X} and {Y} went to the {place} , {S} gave a {object} to",))
    rows = build(suites=[config], tokenizers={"mamba": tok, "gpt2": tok})["natural"].to_list()
    for row in rows[1:]:  # prompt 0 is the classic sentence, whose "store," this vocabulary lacks
        for m in FAMILIES:
            for k in KINDS:
                df = patch_sweep(row[f"{m}_native_ids"], row[f"{m}_{k}_ids"], model=tiny[0][m],
                                 answer=row[f"{m}_answer_id"], wrong=row[f"{m}_wrong_id"],
                                 component="resid_post", positions=["all"], layers=[-1])
                assert df["recovery"].tolist() == pytest.approx([1.0]), (m, k)
