"""The study runs logit_lens and attribution_patch per suite row, row for row equal to direct calls."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from compare import attribution_patch, logit_lens, study
from compare.study.spec import SpecError

CLEAN = "When Mary and John went to the store , John gave a drink to"
CORRUPT = "When Mary and John went to the store , Mary gave a drink to"
MODELS = ("mamba", "gpt2")


def spec_of(dirs, prompts, analyses):
    return {"prompts": prompts, "models": [str(dirs[m]) for m in MODELS], "seed": 0, "device": "cpu",
            "analyses": analyses}


def test_suite_rows_give_each_model_its_own_ids_target_and_counterfactual(tiny_dirs, tiny, tmp_path):
    datasets = pytest.importorskip("datasets")
    handles = tiny[0]
    row = {"id": "natural-00000", "text": CLEAN, "target": "Mary"}
    for m in MODELS:
        h = handles[m]
        row |= {f"{m}_native_ids": h.encode(CLEAN), f"target_id_{m}": h.encode(" Mary")[0],
                f"{m}_name_swap_ids": h.encode(CORRUPT), f"{m}_answer_id": h.encode(" Mary")[0],
                f"{m}_wrong_id": h.encode(" John")[0]}
    spec = spec_of(tiny_dirs[0], datasets.Dataset.from_list([row]),
                   [{"analysis": "logit_lens", "k": 2}, {"analysis": "attribution_patch", "corruption": "name_swap"}])
    result = study.run(spec, tmp_path / "s", progress=False)
    assert (result.done, result.failed) == (4, [])
    for m in MODELS:
        h = handles[m]
        lens = study.read(tmp_path / "s", "logit_lens")
        got = lens[lens["task"] == f"logit_lens/{m}/p000000"].drop(columns=["task", "prompt_index", "run_time_ids"])
        direct = logit_lens(h.encode(CLEAN), model=h, target=row[f"target_id_{m}"], k=2)
        assert got["top_ids"].map(list).tolist() == direct["top_ids"].map(list).tolist()
        pd.testing.assert_frame_equal(got.drop(columns=["top_tokens", "top_ids", "top_probs"]).reset_index(drop=True),
                                      direct.drop(columns=["top_tokens", "top_ids", "top_probs"]), check_dtype=False,
                                      rtol=1e-6)
        attr = study.read(tmp_path / "s", "attribution_patch")
        got = attr[attr["task"] == f"attribution_patch/{m}/p000000"].drop(columns=["task", "prompt_index", "run_time_ids"])
        direct = attribution_patch(h.encode(CLEAN), h.encode(CORRUPT), model=h, answer=" Mary", wrong=" John")
        pd.testing.assert_frame_equal(got.reset_index(drop=True), direct, check_dtype=False, rtol=1e-5, atol=1e-7)


def test_attribution_in_a_study_needs_suite_rows(tiny_dirs, tmp_path):
    spec = spec_of(tiny_dirs[0], [CLEAN], [{"analysis": "attribution_patch", "corruption": "abc"}])
    with pytest.raises(SpecError, match=r"analyses\[0\]: attribution_patch needs suite prompts"):
        study.run(spec, tmp_path / "s", progress=False)


def test_a_study_sets_attributions_steps(tiny_dirs, tiny, tmp_path):
    """steps=4 in the spec: the study's rows are the API's call with steps=4 (and differ from steps=1)."""
    datasets = pytest.importorskip("datasets")
    h = tiny[0]["mamba"]
    row = {"id": "natural-00000", "text": CLEAN, "target": "Mary", "mamba_native_ids": h.encode(CLEAN),
           "target_id_mamba": h.encode(" Mary")[0], "mamba_name_swap_ids": h.encode(CORRUPT),
           "mamba_answer_id": h.encode(" Mary")[0], "mamba_wrong_id": h.encode(" John")[0]}
    spec = {"prompts": datasets.Dataset.from_list([row]), "models": [str(tiny_dirs[0]["mamba"])], "seed": 0,
            "device": "cpu", "analyses": [{"analysis": "attribution_patch", "corruption": "name_swap", "steps": 4}]}
    result = study.run(spec, tmp_path / "s", progress=False)
    assert (result.done, result.failed) == (1, [])
    got = study.read(tmp_path / "s", "attribution_patch").drop(columns=["task", "prompt_index", "run_time_ids"])
    direct = attribution_patch(h.encode(CLEAN), h.encode(CORRUPT), model=h, answer=" Mary", wrong=" John", steps=4)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), direct, check_dtype=False, rtol=1e-5, atol=1e-7)
    plain = attribution_patch(h.encode(CLEAN), h.encode(CORRUPT), model=h, answer=" Mary", wrong=" John")
    assert not np.allclose(got["estimate"], plain["estimate"])


def _row(handles, models):
    row = {"id": "natural-00000", "text": CLEAN, "target": "Mary", "params": '{"version": "test"}'}
    for m in models:
        h = handles[m]
        row |= {f"{m}_native_ids": h.encode(CLEAN), f"target_id_{m}": h.encode(" Mary")[0],
                f"{m}_name_swap_ids": h.encode(CORRUPT), f"{m}_answer_id": h.encode(" Mary")[0],
                f"{m}_wrong_id": h.encode(" John")[0]}
    return row


def test_a_family_reads_its_tokenizer_familys_columns_of_a_suite_row(tiny_dirs, tiny, tmp_path):
    """Mamba-2 reads GPT-NeoX-20B, as Mamba does: a suite row with Mamba's columns only is Mamba-2's
    too (as `compare` reads it), in logit_lens, attribution_patch and noise_sweep alike."""
    datasets = pytest.importorskip("datasets")
    h = tiny[0]["mamba2"]
    spec = {"prompts": datasets.Dataset.from_list([_row(tiny[0], ["mamba"])]), "models": [str(tiny_dirs[0]["mamba2"])],
            "seed": 0, "device": "cpu",
            "analyses": [{"analysis": "logit_lens", "k": 2}, {"analysis": "attribution_patch", "corruption": "name_swap"},
                         {"analysis": "noise_sweep", "levels": [0.0]}]}
    result = study.run(spec, tmp_path / "s", progress=False)
    assert (result.done, result.failed) == (3, [])
    got = study.read(tmp_path / "s", "attribution_patch").drop(columns=["task", "prompt_index", "run_time_ids"])
    direct = attribution_patch(h.encode(CLEAN), h.encode(CORRUPT), model=h, answer=" Mary", wrong=" John")
    pd.testing.assert_frame_equal(got.reset_index(drop=True), direct, check_dtype=False, rtol=1e-5, atol=1e-7)
    lens = study.read(tmp_path / "s", "logit_lens")
    assert (lens["target"] == "Mary").all()  # the row's target_id_mamba


def test_a_suite_row_without_the_models_columns_is_tokenised_at_run_time_and_marked(tiny_dirs, tiny, tmp_path):
    """A hybrid has no columns in a suite built for Mamba and GPT-2: its tasks read the row's text
    in its own tokenizer (the text fields the columns were built from) and say so in run_time_ids;
    the models with columns read them and say False."""
    datasets = pytest.importorskip("datasets")
    row = _row(tiny[0], MODELS) | {"target": " Mary", "answer": " Mary", "wrong": " John", "corrupt_abc": None,
                                    "corrupt_name_swap": CORRUPT}
    spec = {"prompts": datasets.Dataset.from_list([row]), "seed": 0, "device": "cpu",
            "models": [str(tiny_dirs[0]["mamba"]), str(tiny_dirs[0]["granite_hybrid"])],
            "analyses": [{"analysis": "logit_lens"}, {"analysis": "attribution_patch", "corruption": "name_swap"},
                         {"analysis": "noise_sweep", "levels": [0.0]}]}
    result = study.run(spec, tmp_path / "s", progress=False)
    assert (result.done, result.failed) == (6, [])
    for label in ("logit_lens", "attribution_patch", "noise_sweep"):
        frame = study.read(tmp_path / "s", label)
        marked = frame.groupby(frame["task"].str.split("/").str[1])["run_time_ids"].unique()
        assert marked.map(list).to_dict() == {"granite_hybrid": [True], "mamba": [False]}
