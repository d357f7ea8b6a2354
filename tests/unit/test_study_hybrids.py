"""A study over a saved datasets_gen suite runs a hybrid beside Mamba and GPT-2: the suite has no
columns for a hybrid's tokenizer, so its tasks tokenise the row's text at run time; each task's rows
equal the analysis called directly on that text, and a row the hybrid's tokenizer cannot take (a
two-token target, a pair of unequal lengths) fails with its reason while the other rows finish."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from compare import attribution_patch, compare, load_model, logit_lens, noise_sweep, study
from compare.handle.vocabularies import load_vocab
from conftest import TINY_VOCAB, WORDS, build_granite_hybrid, one_thread, rows_of, tiny_tokenizer

datasets = pytest.importorskip("datasets")

TEMPLATE = "When {X} and {Y} went to the {place} , {S} gave a {object} to"
IOIS = (("Mary", "John"), ("John", "he"))  # (indirect object, subject): the answer, and the name it must not be
HYBRIDS = ("granite_hybrid", "falcon_h1")
MODELS = ("mamba", *HYBRIDS, "gpt2")


def text_of(io, s, repeated):
    return TEMPLATE.format(X=io, Y=s, S=repeated, place="store", object="drink")


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """A saved natural suite of the IOIS prompts, built by datasets_gen's own row code for Mamba and
    GPT-2 (both reading the tiny word-level tokenizer), with the abc and name_swap counterfactuals."""
    from datasets_gen.build import features, row
    from datasets_gen.counterfactuals import IOI, pairs
    from datasets_gen.suites import Prompt

    vocabs = {m: load_vocab(tiny_tokenizer(), m) for m in ("mamba", "gpt2")}
    rows = []
    for i, (io, s) in enumerate(IOIS):
        ioi = IOI(io=io, s=s, first=io, template=TEMPLATE, place="store", object="drink")
        source = vocabs["mamba"].encode(ioi.text(s))
        prompt = Prompt("natural", f"natural-{i:05d}", ioi.text(s), "mamba", tuple(source),
                        vocabs["mamba"].encode(" " + io)[0])
        rows.append(row(prompt, vocabs, json.dumps({"version": "test", "seed": 0}), pairs(ioi, "dog", vocabs)))
    path = tmp_path_factory.mktemp("suite") / "suites"
    table = datasets.Dataset.from_list(rows, features=features())
    datasets.DatasetDict({"natural": table}).save_to_disk(str(path))
    assert not any(k.startswith(HYBRIDS) for k in table.column_names)  # the hybrids have no columns
    return {"path": str(path), "split": "natural"}


def test_a_hybrid_beside_mamba_and_gpt2_runs_on_the_rows_text_as_a_direct_call(suite, tiny_dirs, tiny, tmp_path):
    dirs, handles = tiny_dirs[0], tiny[0]
    noise = {"levels": [0.0, 0.5], "trials": 2}
    spec = {"suite": suite, "models": [str(dirs[m]) for m in MODELS], "seed": 0, "device": "cpu",
            "analyses": [{"analysis": "compare"}, {"analysis": "noise_sweep", **noise},
                         {"analysis": "logit_lens", "k": 2}, {"analysis": "attribution_patch", "corruption": "abc"}]}
    result = study.run(spec, tmp_path / "s", progress=False)
    assert (result.done, result.failed) == (2 + 3 * len(MODELS) * len(IOIS), [])
    frames = {label: study.read(tmp_path / "s", label)
              for label in ("compare", "noise_sweep", "logit_lens", "attribution_patch")}
    for i, (io, s) in enumerate(IOIS):
        clean, corrupt = text_of(io, s, s), text_of(io, s, "dog")
        with one_thread():
            direct = compare(clean, models=[handles[m] for m in MODELS], variant="aligned", track=[io],
                             progress=False).to_frame()
        got = rows_of(frames["compare"], f"compare/{'+'.join(MODELS)}/p{i:06d}")
        pd.testing.assert_frame_equal(got[direct.columns], direct, check_dtype=False, rtol=1e-6)
        for m in HYBRIDS:
            h = handles[m]
            target = h.single_token(" " + io)
            key = f"noise_sweep/{m}/p{i:06d}"
            with one_thread():
                sweep = noise_sweep(h.encode(clean), model=h, target=target, seed=study.task_seed(0, key), **noise)
                lens = logit_lens(h.encode(clean), model=h, target=target, k=2)
                attribution = attribution_patch(h.encode(clean), h.encode(corrupt), model=h, answer=" " + io,
                                                wrong=" " + s)
            pd.testing.assert_frame_equal(rows_of(frames["noise_sweep"], key), sweep, check_dtype=False, rtol=1e-6)
            got = rows_of(frames["logit_lens"], f"logit_lens/{m}/p{i:06d}")
            assert got["top_ids"].map(list).tolist() == lens["top_ids"].map(list).tolist()
            tuples = ["top_tokens", "top_ids", "top_probs"]
            pd.testing.assert_frame_equal(got.drop(columns=tuples), lens.drop(columns=tuples), check_dtype=False,
                                          rtol=1e-6)
            pd.testing.assert_frame_equal(rows_of(frames["attribution_patch"], f"attribution_patch/{m}/p{i:06d}"),
                                          attribution, check_dtype=False, rtol=1e-5, atol=1e-7)
    compared = frames["compare"]
    assert compared.groupby("model")["run_time_ids"].unique().map(list).to_dict() == {
        "mamba": [False], "gpt2": [False], "granite_hybrid": [True], "falcon_h1": [True]}
    for label in ("noise_sweep", "logit_lens", "attribution_patch"):
        frame = frames[label]
        marked = frame.groupby(frame["task"].str.split("/").str[1])["run_time_ids"].unique().map(list).to_dict()
        assert marked == {m: [m in HYBRIDS] for m in MODELS}


def splitting_tokenizer():
    """The tiny word-level tokenizer, but reading "Mary" as the two tokens "Ma" "ry" (IDs 64, 65)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    vocab = dict(tiny_tokenizer().get_vocab())
    assert len(vocab) == TINY_VOCAB and "Mary" in WORDS
    vocab |= {"Ma": TINY_VOCAB, "ry": TINY_VOCAB + 1}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Split(Regex("ry"), behavior="isolated")])
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|endoftext|>")


def test_a_row_the_hybrids_tokenizer_cannot_take_fails_with_its_reason_and_the_others_finish(suite, tiny_dirs,
                                                                                            tiny, tmp_path):
    """Row 0's target "Mary" is two tokens for this hybrid: its noise_sweep fails naming the target,
    its abc pair naming the answer, its name_swap pair (one "Mary" more) naming the lengths; row 1
    (no Mary) and Mamba's rows finish, equal to direct calls."""
    folder = tmp_path / "granite_split"
    build_granite_hybrid(folder, with_tokenizer=False)
    splitting_tokenizer().save_pretrained(folder)
    h, mamba = load_model(folder, device="cpu"), tiny[0]["mamba"]
    assert h.encode("Mary") == [TINY_VOCAB, TINY_VOCAB + 1]
    spec = {"suite": suite, "models": [str(tiny_dirs[0]["mamba"]), str(folder)], "seed": 0, "device": "cpu",
            "analyses": [{"analysis": "noise_sweep", "levels": [0.0, 0.5], "trials": 2},
                         {"analysis": "attribution_patch", "corruption": "abc"},
                         {"analysis": "attribution_patch", "corruption": "name_swap", "label": "swap"}]}
    result = study.run(spec, tmp_path / "s", progress=False)
    assert result.done == 3 * 3 and len(result.failed) == 3
    errors = {f["task"]: f["error"] for f in study.results.failures(tmp_path / "s")}
    assert errors == {
        "noise_sweep/granite_split/p000000": "ValueError: target: the suite row 'natural-00000' has no one-token "
        "target for granite_split (its target 'Mary' is 2 tokens in the granite_split tokenizer); give 'target' "
        "in the analysis",
        "attribution_patch/granite_split/p000000": "ValueError: answer: ' Mary' is 2 tokens in the granite_split "
        "tokenizer; it must be one token in every tokenizer (mind the leading space)",
        "swap/granite_split/p000000": f"ValueError: name_swap: {text_of('Mary', 'John', 'Mary')!r} is 16 tokens in "
        f"the granite_split tokenizer and its clean prompt {text_of('Mary', 'John', 'John')!r} 15; patching needs "
        "equal lengths"}
    sweeps = study.read(tmp_path / "s", "noise_sweep")
    for model, handle, i in (("granite_split", h, 1), ("mamba", mamba, 0), ("mamba", mamba, 1)):
        io, s = IOIS[i]
        key = f"noise_sweep/{model}/p{i:06d}"
        with one_thread():
            direct = noise_sweep(handle.encode(text_of(io, s, s)), model=handle, target=handle.single_token(" " + io),
                                 levels=[0.0, 0.5], trials=2, seed=study.task_seed(0, key))
        pd.testing.assert_frame_equal(rows_of(sweeps, key), direct, check_dtype=False, rtol=1e-6)
    io, s = IOIS[1]
    with one_thread():
        direct = attribution_patch(h.encode(text_of(io, s, s)), h.encode(text_of(io, s, "dog")), model=h,
                                   answer=" " + io, wrong=" " + s)
    got = rows_of(study.read(tmp_path / "s", "attribution_patch"), "attribution_patch/granite_split/p000001")
    pd.testing.assert_frame_equal(got, direct, check_dtype=False, rtol=1e-5, atol=1e-7)
