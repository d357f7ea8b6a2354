"""IOI counterfactual pairs: the exact strings, one-token names and equal lengths in every real tokenizer,
and a pair that patch_sweep takes as it is."""
from __future__ import annotations

import numpy as np
import pytest

from compare.analyses.patching import patch_sweep
from compare.handle.vocabularies import load_vocab
from datasets_gen.counterfactuals import IOI, KINDS, counterfactuals, pairs
from datasets_gen.suites import CLASSIC_IOI, IOI_TEMPLATES, NAMES, OBJECTS, PLACES

CLASSIC = IOI("Mary", "John", "Mary", CLASSIC_IOI[2], "store", "drink")


@pytest.fixture(scope="module")
def real_vocabs():
    from conftest import shared_tokenizer

    return {"mamba": load_vocab(shared_tokenizer("gpt-neox-20b"), "mamba"),
            "gpt2": load_vocab(shared_tokenizer("gpt2"), "gpt2")}


def test_the_classic_pair(real_vocabs):
    abc, swap = pairs(CLASSIC, "Paul", real_vocabs)
    assert (abc["kind"], swap["kind"]) == KINDS
    assert abc["clean"] == swap["clean"] == "When Mary and John went to the store, John gave a drink to"
    assert abc["corrupt"] == "When Mary and John went to the store, Paul gave a drink to"
    assert swap["corrupt"] == "When Mary and John went to the store, Mary gave a drink to"
    for row in (abc, swap):
        assert (row["answer"], row["wrong"]) == (" Mary", " John")
        for model, vocab in real_vocabs.items():
            assert row[f"{model}_answer_id"] == vocab.encode(" Mary")[0]
            assert row[f"{model}_wrong_id"] == vocab.encode(" John")[0]
            assert row[f"{model}_clean_ids"] == vocab.encode(row["clean"])
            assert len(row[f"{model}_clean_ids"]) == len(row[f"{model}_corrupt_ids"]) == 14


def test_every_suite_name_template_and_order_pairs_in_every_real_tokenizer(real_vocabs):
    rng = np.random.default_rng(0)
    iois = [IOI(io, s, first, t, PLACES[i % len(PLACES)], OBJECTS[i % len(OBJECTS)])
            for i, (io, s) in enumerate(zip(NAMES, NAMES[1:] + NAMES[:1]))
            for t in IOI_TEMPLATES for first in (io, s)]
    rows = counterfactuals(iois, NAMES, real_vocabs, rng)
    assert len(rows) == 2 * len(iois)
    for row in rows:
        assert row["clean"] != row["corrupt"]
        for model in real_vocabs:
            clean, corrupt = row[f"{model}_clean_ids"], row[f"{model}_corrupt_ids"]
            assert len(clean) == len(corrupt)
            assert sum(a != b for a, b in zip(clean, corrupt)) == 1  # the repeated subject only
    thirds = {row["corrupt"] for row in rows if row["kind"] == "abc"}
    assert len(thirds) == len(iois)  # fresh draws


def test_the_draw_is_the_generators(real_vocabs):
    draw = lambda seed: counterfactuals([CLASSIC], NAMES, real_vocabs, np.random.default_rng(seed))[0]["corrupt"]
    assert draw(3) == draw(3)
    assert len({draw(s) for s in range(8)}) > 1


def test_a_name_of_several_tokens_or_a_third_that_is_not_third_is_refused(real_vocabs):
    with pytest.raises(ValueError, match=r"names: ' Xylophonista' is \d+ tokens in the (mamba|gpt2) tokenizer"):
        pairs(CLASSIC, "Xylophonista", real_vocabs)
    with pytest.raises(ValueError, match=r"third: 'John' must differ"):
        pairs(CLASSIC, "John", real_vocabs)
    with pytest.raises(ValueError, match="need a third name"):
        counterfactuals([CLASSIC], ("Mary", "John"), real_vocabs, np.random.default_rng(0))


def test_a_pair_patches_as_it_is(tiny):
    from conftest import tiny_tokenizer

    vocabs = {"mamba": load_vocab(tiny_tokenizer(), "mamba")}
    ioi = IOI("Mary", "John", "Mary", "When {X} and {Y} went to the {place} , {S} gave a {object} to", "store", "drink")
    for row in pairs(ioi, "it", vocabs):
        df = patch_sweep(row["mamba_clean_ids"], row["mamba_corrupt_ids"], model=tiny[0]["mamba"],
                         answer=row["mamba_answer_id"], wrong=row["mamba_wrong_id"], component="resid_post",
                         positions=["all"], layers=[-1])
        assert df["recovery"].tolist() == [1.0]


def test_the_natural_suite_gives_the_pairs_of_its_own_prompts(real_vocabs):
    from datasets_gen.suites import NaturalConfig

    suite = NaturalConfig(n=6)
    prompts = suite.generate(real_vocabs, np.random.default_rng(7))
    rows = suite.counterfactuals(real_vocabs, np.random.default_rng(7))
    assert [r["clean"] for r in rows] == [p.text for p in prompts for _ in KINDS]
    assert [r["kind"] for r in rows] == list(KINDS) * 6
    for prompt, row in zip(prompts, rows[::2]):
        assert row["mamba_answer_id"] == prompt.target_id and row["mamba_clean_ids"] == list(prompt.source_ids)
