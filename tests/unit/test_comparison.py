"""`compare` on tiny random models against plain transformers forwards and numpy."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

import compare as package
from compare.analyses import comparison as engine
from conftest import SHARED_TOKENIZERS, build_pythia, shared_tokenizer, tiny_tokenizer

TEXT = "When Mary and John went to the store , John gave a drink to"
V = 64  # the tiny tokenizer's vocabulary; the models' embeddings have padding rows beyond it


@pytest.fixture(scope="module")
def models(tiny):
    handles, refs = tiny
    return [handles["mamba"], handles["gpt2"]], [refs["mamba"], refs["gpt2"]]


def ref_logits(ref, ids):
    with torch.no_grad():
        return ref(torch.tensor([ids])).logits[0, :, :V].double().numpy()


def ids_of(text):
    return tiny_tokenizer().encode(text, add_special_tokens=False)


def test_the_package_exposes_compare_as_a_function():
    assert package.compare is engine.compare and package.Comparison is engine.Comparison


def test_logits_match_the_transformers_forward(models):
    handles, refs = models
    result = package.compare(TEXT, handles, variant="native")
    for handle, ref in zip(handles, refs):
        np.testing.assert_allclose(result.runs[handle.name].logits, ref_logits(ref, ids_of(TEXT)), atol=1e-4)


def test_k_p_and_argmax_match_numpy(models):
    handles, refs = models
    result = package.compare(TEXT, handles, variant="native")
    for handle, ref in zip(handles, refs):
        L = ref_logits(ref, ids_of(TEXT))
        run = result.runs[handle.name]
        np.testing.assert_allclose(run.k, L / np.abs(L.mean(axis=1, keepdims=True)), rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(run.probs, np.exp(L) / np.exp(L).sum(axis=1, keepdims=True), atol=1e-5)
        assert run.prediction_ids.tolist() == L.argmax(axis=1).tolist()
        vocab = {i: w for w, i in tiny_tokenizer().get_vocab().items()}
        assert run.predictions == [vocab[i] for i in L.argmax(axis=1)]


def test_tracked_token_trajectories_are_columns_of_l_k_p(models):
    handles, refs = models
    mary = tiny_tokenizer().get_vocab()["Mary"]
    result = package.compare(TEXT, handles, variant="native", track=" Mary")
    for handle, ref in zip(handles, refs):
        L = ref_logits(ref, ids_of(TEXT))
        trajectory = result.runs[handle.name].tracked[" Mary"]
        assert trajectory.id == mary
        np.testing.assert_allclose(trajectory.L, L[:, mary], atol=1e-4)
        np.testing.assert_allclose(trajectory.K, L[:, mary] / np.abs(L.mean(axis=1)), rtol=1e-3)
        np.testing.assert_allclose(trajectory.P, np.exp(L[:, mary]) / np.exp(L).sum(axis=1), atol=1e-5)


def test_a_tracked_id_is_in_the_first_models_tokenizer(models):
    handles, _ = models
    mary = tiny_tokenizer().get_vocab()["Mary"]
    result = package.compare(TEXT, handles, variant="native", track=mary)
    assert [run.tracked["Mary"].id for run in result.runs.values()] == [mary, mary]


def test_cross_model_agreement_and_js_match_numpy(models):
    handles, refs = models
    result = package.compare(TEXT, handles, variant="same_ids")
    La, Lb = (ref_logits(ref, ids_of(TEXT)) for ref in refs)
    Pa, Pb = (np.exp(L) / np.exp(L).sum(axis=1, keepdims=True) for L in (La, Lb))
    M = (Pa + Pb) / 2
    js = 0.5 * (Pa * np.log2(Pa / M)).sum(axis=1) + 0.5 * (Pb * np.log2(Pb / M)).sum(axis=1)
    np.testing.assert_allclose(result.cross["js"], js, atol=1e-5)
    assert result.cross["agree"].tolist() == (La.argmax(axis=1) == Lb.argmax(axis=1)).tolist()
    assert result.cross["position"].tolist() == result.cross["other_position"].tolist() == list(range(len(js)))


def test_lock_in_on_a_periodic_prompt(models):
    handles, refs = models
    ids = ids_of("1 2 3 1 2 3 1 2 3 1 2")
    result = package.compare(ids, handles, variant="same_ids")
    for handle, ref in zip(handles, refs):
        predictions = ref_logits(ref, ids).argmax(axis=1)
        expected = ids[1:] + [ids[len(ids) - 3]]
        lock = next((t for t in range(len(ids)) if all(predictions[u] == expected[u] for u in range(t, len(ids)))), None)
        assert result.runs[handle.name].lock_in == lock


def test_a_suite_in_batches_equals_one_by_one_runs(models):
    handles, _ = models
    suite = [TEXT, "Mary and John", ids_of("1 2 1 2 1 2 the cat"), "red"]
    batched = package.compare(suite, handles, variant="native", batch_size=3, progress=False)
    for prompt, result in zip(suite, batched):
        single = package.compare(prompt, handles, variant="native")
        for name, run in single.runs.items():
            np.testing.assert_allclose(result.runs[name].logits, run.logits, atol=1e-5)
            assert result.runs[name].tokens == run.tokens


def test_a_suite_without_arrays_keeps_every_summary(models):
    handles, _ = models
    suite = [TEXT, "Mary and John"]
    full = package.compare(suite, handles, variant="native", track=" Mary", progress=False)
    lean = package.compare(suite, handles, variant="native", track=" Mary", progress=False, keep_arrays=False)
    for a, b in zip(full, lean):
        pd.testing.assert_frame_equal(a.to_frame(), b.to_frame())
        pd.testing.assert_frame_equal(a.cross, b.cross)
        assert all(run.logits is None and run.k is None and run.probs is None for run in b.runs.values())
        assert set(b.figures()) == set(a.figures()) - {"k_distributions", "flattened_logits"}


def test_to_frame_has_one_row_per_model_and_position(models):
    handles, _ = models
    result = package.compare(TEXT, handles, variant="native", track=" Mary")
    frame = result.to_frame()
    T = len(ids_of(TEXT))
    assert len(frame) == 2 * T
    assert {"model", "position", "token", "prediction", "p_prediction", "variance", "skew",
            "tail_bump", "L[ Mary]", "K[ Mary]", "P[ Mary]"} <= set(frame.columns)
    run = result.runs["gpt2"]
    rows = frame[frame["model"] == "gpt2"]
    np.testing.assert_allclose(rows["p_prediction"], run.probs.max(axis=1))


def test_tokenizer_stats_tabulate_every_id_and_its_decoded_length(models):
    handles, _ = models
    result = package.compare(TEXT, handles, variant="native", tokenizer_stats=True)
    tok = tiny_tokenizer()
    for handle in handles:
        table = result.tokenizer_tables[handle.name]
        assert table["id"].tolist() == list(range(V))
        assert table["length"].tolist() == [len(tok.decode([i], clean_up_tokenization_spaces=False))
                                            for i in range(V)]


def test_a_suite_row_brings_its_ids_seed_and_target(models):
    handles, _ = models
    ids, mary = ids_of("When Mary and John"), tiny_tokenizer().get_vocab()["Mary"]
    row = {"text": "When Mary and John", "source": "mamba", "target": " Mary", "target_id_mamba": mary,
           "target_id_gpt2": mary, "params": json.dumps({"seed": 7})}
    for family in ("mamba", "gpt2"):
        row.update({f"{family}_aligned_ids": ids, f"{family}_aligned_split": [1] * 4,
                    f"{family}_aligned_flags": [False] * 4})
    result = package.compare(row, handles, variant="aligned")
    assert result.seed == 7 and result.runs["mamba"].ids.tolist() == ids
    assert result.runs["gpt2"].tracked[" Mary"].id == mary


def test_models_are_loaded_once_per_source(tiny_dirs, monkeypatch):
    dirs, _ = tiny_dirs
    calls = []
    import compare.handle.loading as loading

    monkeypatch.setattr(loading, "_CACHE", {})
    monkeypatch.setattr(loading, "load_model", lambda source, **kwargs: calls.append(source) or
                        package.load_model(source, **kwargs))
    for _ in range(2):
        package.compare("Mary", [dirs["mamba"], dirs["gpt2"]], variant="native", device="cpu")
    assert calls == [dirs["mamba"], dirs["gpt2"]]


def test_save_writes_parquet_metadata_and_figures(models, tmp_path):
    handles, _ = models
    result = package.compare(TEXT, handles, variant="native", track=" Mary")
    out = result.save(tmp_path / "out")
    pd.testing.assert_frame_equal(pd.read_parquet(out / "runs.parquet"), result.to_frame(), check_dtype=False)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["variant"] == "native" and list(meta["models"]) == ["mamba", "gpt2"]
    assert {"torch", "transformers", "nnsight", "mamba-gpt2-compare"} <= set(meta["versions"])
    assert {"k_distributions.png", "trajectories.png", "flattened_logits.png", "top_k.png"} <= {
        p.name for p in (out / "figures").iterdir()}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging left behind


def test_saved_metadata_is_standard_json_for_a_one_token_prompt(models, tmp_path):
    # one position: the variance trend's slope and r are NaN, which json.dumps wrote as bare NaN
    handles, _ = models
    result = package.compare("Mary", handles, variant="native")
    assert np.isnan(result.metadata()["variance_trend"]["mamba"]["slope"])
    text = (result.save(tmp_path / "out") / "metadata.json").read_text()
    meta = json.loads(text, parse_constant=lambda name: pytest.fail(f"metadata.json holds {name}, not JSON"))
    assert meta["variance_trend"]["mamba"]["slope"] == "nan"


def test_save_refuses_to_overwrite_unless_asked(models, tmp_path):
    handles, _ = models
    result = package.compare("Mary", handles, variant="native")
    result.save(tmp_path / "out")
    with pytest.raises(FileExistsError, match="overwrite"):
        result.save(tmp_path / "out")
    result.save(tmp_path / "out", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("prompt, error, match", [
    ("", ValueError, "prompt"), ("   ", ValueError, "prompt"), ([], ValueError, "prompt"),
    ([3, 100], ValueError, "outside the vocabulary"), (3.5, TypeError, "prompt"),
    (" ".join(["Mary"] * 1025), ValueError, "gpt2: 1025 tokens exceed the model.s context of 1024"),
])
def test_bad_prompts_raise_clear_errors(models, prompt, error, match):
    with pytest.raises(error, match=match):
        package.compare(prompt, models[0], variant="native")


def test_an_unknown_variant_is_rejected(models):
    with pytest.raises(ValueError, match="native, same_ids, aligned"):
        package.compare(TEXT, models[0], variant="tokens")


def test_a_tracked_token_must_be_one_token_in_every_model(models):
    with pytest.raises(ValueError, match=r"'Mary John' is 2 tokens in mamba's tokenizer"):
        package.compare(TEXT, models[0], variant="native", track="Mary John")


@pytest.mark.parametrize("track", [True, 2.5, [None]])
def test_a_tracked_token_of_the_wrong_type_is_rejected(models, track):
    with pytest.raises(TypeError, match="track"):
        package.compare(TEXT, models[0], variant="native", track=track)


def test_models_must_be_a_list_of_sources(models):
    with pytest.raises(TypeError, match="models"):
        package.compare(TEXT, "gpt2")
    with pytest.raises(ValueError, match="distinct"):
        package.compare(TEXT, [models[0][0], models[0][0]])


def test_two_tracked_ids_that_read_alike_keep_both_trajectories(real_vocab_models):
    # GPT-NeoX's 100 and 101 are byte fragments, each "\ufffd" alone: both were keyed "\ufffd" and
    # the first trajectory was silently dropped
    result = package.compare("When Mary and John", real_vocab_models, variant="same_ids", track=[100, 101])
    for run in result.runs.values():
        assert sorted(tr.id for tr in run.tracked.values()) == [100, 101]
        for label, tr in run.tracked.items():
            assert str(tr.id) in label
            np.testing.assert_array_equal(tr.L, run.logits[:, tr.id])
    assert len([c for c in result.to_frame().columns if c.startswith("L[")]) == 2


def test_aligned_positions_use_the_last_piece_of_a_split_token(real_vocab_models):
    # " Kubernetes" is one GPT-NeoX token but four GPT-2 tokens (see shared/tokenizers/README.md)
    result = package.compare("I use Kubernetes daily", real_vocab_models, variant="aligned")
    tokens = result.runs["gpt2"].tokens
    assert len(tokens) == 7 and "".join(tokens) == "I use Kubernetes daily"
    cross = result.cross
    assert cross["position"].tolist() == [0, 1, 2, 3]
    assert cross["other_position"].tolist() == [0, 1, 5, 6]
    assert cross["split"].tolist() == [False, False, True, False]


def test_native_pairs_positions_that_end_at_the_same_text(real_vocab_models):
    result = package.compare("I use Kubernetes daily", real_vocab_models, variant="native")
    assert result.cross["other_position"].tolist() == [0, 1, 5, 6]


def test_a_token_split_in_one_model_names_that_model(real_vocab_models):
    with pytest.raises(ValueError, match=r"' Kubernetes' is 4 tokens in gpt2's tokenizer"):
        package.compare("I use Kubernetes", real_vocab_models, track=" Kubernetes")


def test_js_is_over_tokens_both_vocabularies_share(real_vocab_models):
    result = package.compare("When Mary and John went to the store, John gave a drink to",
                             real_vocab_models, variant="aligned")
    assert len(result.cross) == 14 and not result.cross["split"].any()
    assert ((result.cross["js"] >= 0) & (result.cross["js"] <= 1)).all()
    assert (result.cross["shared_mass"] < 1).all() and (result.cross["shared_mass"] > 0.5).all()


def test_k_over_all_columns_divides_by_the_mean_of_every_lm_head_row(models):
    handles, refs = models
    result = package.compare(TEXT, handles, variant="native", k_columns="all")
    assert result.k_columns == "all" and result.metadata()["k_columns"] == "all"
    for handle, ref in zip(handles, refs):
        with torch.no_grad():
            L_all = ref(torch.tensor([ids_of(TEXT)])).logits[0].double().numpy()  # 72 rows: 64 + 8 padding
        assert L_all.shape[1] > V
        run = result.runs[handle.name]
        np.testing.assert_allclose(run.k, L_all[:, :V] / np.abs(L_all.mean(axis=1, keepdims=True)), rtol=1e-3, atol=1e-4)
        assert run.logits.shape[1] == V  # L and P stay over the real vocabulary
        np.testing.assert_allclose(run.probs.sum(axis=1), 1, atol=1e-5)


def test_k_columns_must_be_vocab_or_all(models):
    with pytest.raises(ValueError, match="k_columns: 'padded' is not allowed; allowed values are vocab, all"):
        package.compare(TEXT, models[0], k_columns="padded")


def test_id_logit_correlation_per_position_matches_numpy(models):
    handles, refs = models
    frame = package.compare(TEXT, handles, variant="native").to_frame()
    for handle, ref in zip(handles, refs):
        L = ref_logits(ref, ids_of(TEXT))
        rows = frame[frame["model"] == handle.name]
        ids = np.arange(V)
        np.testing.assert_allclose(rows["r_id_L"], [np.corrcoef(ids, row)[0, 1] for row in L], atol=1e-4)
        np.testing.assert_allclose(rows["r_logid_L"], [np.corrcoef(np.log1p(ids), row)[0, 1] for row in L], atol=1e-4)
        np.testing.assert_allclose(rows["L_mean"], L.mean(axis=1), rtol=1e-5)
        np.testing.assert_allclose(rows["L_std"], L.std(axis=1), rtol=1e-5)


def test_conclusion_5_distances_match_pandas(models):
    handles, refs = models
    cross = package.compare(TEXT, handles, variant="same_ids").cross
    tok = tiny_tokenizer()
    texts = pd.Series([tok.decode([i], clean_up_tokenization_spaces=False) for i in range(V)])
    shared = texts[~texts.duplicated(keep=False)].index.to_numpy()  # one tokenizer: strings held once
    La, Lb = (pd.DataFrame(ref_logits(ref, ids_of(TEXT))[:, shared]) for ref in refs)
    T = len(La)
    rms = lambda x, y: np.sqrt(((x - y) ** 2).mean())  # noqa: E731
    np.testing.assert_allclose(cross["d_L"], [rms(La.loc[t], Lb.loc[t]) for t in range(T)], rtol=1e-4)
    for column, L in (("d_L_positions", La), ("other_d_L_positions", Lb)):
        expected = [np.mean([rms(L.loc[t], L.loc[u]) for u in range(T) if u != t]) for t in range(T)]
        np.testing.assert_allclose(cross[column], expected, rtol=1e-4)


def test_same_ids_tracks_the_id_each_model_is_fed(real_vocab_models):
    # GPT-NeoX's 6660 is "]),"; fed the same ID, GPT-2 reads " Thus" (the thesis's Fig. 19 cycle)
    ids = [4200, 6660] * 4
    result = package.compare(ids, real_vocab_models, variant="same_ids", track=6660)
    mamba, gpt2 = (result.runs[name].tracked["]),"] for name in ("mamba", "gpt2"))
    assert (mamba.id, mamba.token) == (6660, "]),")
    assert (gpt2.id, gpt2.token) == (6660, " Thus")
    np.testing.assert_allclose(gpt2.L, result.runs["gpt2"].logits[:, 6660])
    by_text = package.compare(ids, real_vocab_models, variant="same_ids", track="]),")  # not a GPT-2 token
    assert by_text.runs["gpt2"].tracked["]),"].id == 6660
    aligned = package.compare(ids, real_vocab_models, variant="native", track=" Thus")
    assert [run.tracked[" Thus"].id for run in aligned.runs.values()] == [3308, 6660]


@pytest.fixture(scope="module")
def neox_models(real_vocab_models, tmp_path_factory):
    """Real-vocabulary Mamba, GPT-2 and a tiny Pythia over the same GPT-NeoX-20B tokenizer."""
    from compare import load_model

    root = tmp_path_factory.mktemp("pythia_vocab")
    build_pythia(root / "pythia", vocab=50304, with_tokenizer=False)
    mamba, gpt2 = real_vocab_models
    return mamba, gpt2, load_model(root / "pythia", tokenizer=shared_tokenizer("gpt-neox-20b"), device="cpu")


def js_bits(p, q):
    m = (p + q) / 2
    return 0.5 * (p * np.log2(p / m)).sum(-1) + 0.5 * (q * np.log2(q / m)).sum(-1)


def test_mamba_and_pythia_share_a_tokenizer_so_variants_coincide_over_the_whole_vocabulary(neox_models):
    mamba, gpt2, pythia = neox_models
    text = "I ❤ 🐍 and Kubernetes"  # byte fragments too: string matching would drop them
    results = {v: package.compare(text, [mamba, pythia, gpt2], variant=v, progress=False) for v in package.analyses.comparison.VARIANTS}
    for result in results.values():
        assert result.same_tokenizer == ("pythia",)
        np.testing.assert_array_equal(result.runs["pythia"].ids, result.runs["mamba"].ids)
    result = results["aligned"]
    T = len(result.runs["mamba"].ids)
    cross = result.cross[result.cross["other"] == "pythia"]
    assert cross["position"].tolist() == cross["other_position"].tolist() == list(range(T))
    assert not cross["split"].any()
    P_a, P_b = result.runs["mamba"].probs.astype(float), result.runs["pythia"].probs.astype(float)
    np.testing.assert_allclose(cross["js"], js_bits(P_a, P_b), atol=1e-5)
    np.testing.assert_allclose(cross["shared_mass"], 1.0, atol=1e-5)
    gpt2_cross = result.cross[result.cross["other"] == "gpt2"]
    assert (gpt2_cross["shared_mass"] < 1).all()  # string-matched: GPT-2's vocabulary is another
    summary = result.summary().splitlines()
    assert "pythia reads mamba's tokenizer" in summary[0] and "whole vocabulary (50,277 tokens)" in summary[0]
    assert "gpt2 and mamba read different tokenizers" in summary[1]
    assert json.loads(json.dumps(result.metadata(), default=str))["same_tokenizer"] == ["pythia"]


def test_two_mambas_are_compared_by_name(tiny):
    handles, _ = tiny
    result = package.compare(TEXT, [handles["mamba"], handles["mamba_ssm"]], variant="native", progress=False)
    assert list(result.runs) == ["mamba", "mamba_ssm"]
    assert {r.family for r in result.runs.values()} == {"mamba"}
    assert result.same_tokenizer == ("mamba_ssm",)  # the tiny checkpoints ship one tokenizer


def test_tracked_frame_has_each_models_id_and_token(real_vocab_models):
    result = package.compare("Hello", real_vocab_models, variant="same_ids", track=6660, progress=False)
    tracked = result.tracked_frame().drop_duplicates("model").set_index("model")
    # both are fed GPT-NeoX's 6660, which GPT-NeoX reads as "])," and GPT-2 as " Thus"
    assert tracked.loc["mamba", ["id", "token"]].tolist() == [6660, "]),"]
    assert tracked.loc["gpt2", ["id", "token"]].tolist() == [6660, " Thus"]


def test_aligned_without_a_source_model_reads_the_tokenizer_the_suites_build_recorded(neox_models, tmp_path):
    """A suite built from tokenizer folders records them (params → tokenizers): a row with no columns
    for a model is aligned with that tokenizer when no model of the call reads it, and the IDs are
    those datasets_gen stored for the model; a recorded folder that is gone, or damaged params,
    give the clear error naming what was recorded."""
    from datasets_gen import CustomConfig, build

    _, gpt2, _ = neox_models
    shared_tokenizer("gpt-neox-20b")  # skips where the real tokenizers are absent
    folders = {"mamba": str(SHARED_TOKENIZERS / "gpt-neox-20b"), "gpt2": str(SHARED_TOKENIZERS / "gpt2")}
    row = build(suites=[CustomConfig(texts=(TEXT + " 🐍 日本",))], tokenizers=folders)["custom"][0]
    assert json.loads(row["params"])["tokenizers"]["mamba"] == folders["mamba"]
    no_gpt2 = {k: v for k, v in row.items() if not k.startswith("gpt2_") and k != "target_id_gpt2"}
    got = package.compare(no_gpt2, [gpt2], variant="aligned", progress=False)
    np.testing.assert_array_equal(got.runs["gpt2"].ids, row["gpt2_aligned_ids"])
    assert got.run_time_ids == ("gpt2",)
    moved = json.loads(row["params"])
    moved["tokenizers"]["mamba"] = str(tmp_path / "gone")
    for params in (json.dumps(moved), "{not json", "[1, 2]", None):
        with pytest.raises(ValueError, match=r"needs the mamba tokenizer: give a model that reads it in the same "
                                             r"call, or use 'native' .*recorded it as "):
            package.compare({**no_gpt2, "params": params}, [gpt2], variant="aligned", progress=False)


def test_a_pythia_model_reads_mambas_columns_of_a_suite_built_before_pythia_had_its_own(neox_models):
    from datasets_gen import CustomConfig, build

    mamba, gpt2, pythia = neox_models
    neox, gpt2_tok = shared_tokenizer("gpt-neox-20b"), shared_tokenizer("gpt2")
    row = build(suites=[CustomConfig(texts=(TEXT,))], tokenizers={"mamba": neox, "gpt2": gpt2_tok})["custom"][0]
    old = {k: v for k, v in row.items() if not (k.startswith("pythia_") or k == "target_id_pythia")}
    for variant in ("native", "aligned"):
        new_rows = package.compare(row, [mamba, pythia], variant=variant, progress=False)
        old_rows = package.compare(old, [mamba, pythia], variant=variant, progress=False)
        np.testing.assert_array_equal(old_rows.runs["pythia"].ids, new_rows.runs["pythia"].ids)
        np.testing.assert_array_equal(old_rows.runs["pythia"].ids, row["mamba_" + variant + "_ids"])


def test_a_model_without_columns_in_a_suite_row_tokenises_it_as_datasets_gen_builds_them(neox_models):
    """A row with no columns for a model (a hybrid's own tokenizer; here GPT-2's columns removed)
    is tokenised at run time: in every variant the IDs are those datasets_gen stores for it, and the
    comparison lists the model in run_time_ids (metadata too)."""
    from datasets_gen import CustomConfig, build

    mamba, gpt2, _ = neox_models
    neox, gpt2_tok = shared_tokenizer("gpt-neox-20b"), shared_tokenizer("gpt2")
    row = build(suites=[CustomConfig(texts=(TEXT + " 🐍 日本",))], tokenizers={"mamba": neox, "gpt2": gpt2_tok})["custom"][0]
    no_gpt2 = {k: v for k, v in row.items() if not k.startswith("gpt2_") and k != "target_id_gpt2"}
    for variant in ("native", "same_ids", "aligned"):
        stored = package.compare(row, [mamba, gpt2], variant=variant, progress=False)
        run_time = package.compare(no_gpt2, [mamba, gpt2], variant=variant, progress=False)
        np.testing.assert_array_equal(run_time.runs["gpt2"].ids, row[f"gpt2_{variant}_ids"])
        pd.testing.assert_frame_equal(run_time.cross, stored.cross)
        assert (stored.run_time_ids, run_time.run_time_ids) == ((), ("gpt2",))
    assert run_time.metadata()["run_time_ids"] == ["gpt2"]
    with pytest.raises(ValueError, match=r"variant: the suite has no columns for gpt2 .*'aligned' .*needs the mamba "
                                         r"tokenizer: give a model that reads it in the same call, or use 'native'"):
        package.compare(no_gpt2, [gpt2], variant="aligned", progress=False)
