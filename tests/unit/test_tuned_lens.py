"""The tuned lens: identity translators are the logit lens exactly, training lowers held-out KL at
every layer below the last on tiny random models of each family, a saved lens reloads
bit-identically and is refused on another checkpoint, and an empty corpus is refused."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from compare import load_model
from compare.analyses.lens import logit_lens
from compare.analyses.tuned_lens import TunedLens, load, save, train_tuned_lens
from conftest import WORDS, build_gpt2, build_mamba_hf, build_pythia

PROMPT = "When Mary and John went to the store , John gave a drink to"
BUILDERS = {"mamba": build_mamba_hf, "gpt2": build_gpt2, "pythia": build_pythia}


def texts(seed: int, count: int, words: int = 24) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, words)) for _ in range(count)]


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    """Three-layer tiny models (two layers with a translator), one per family."""
    root = tmp_path_factory.mktemp("deep")
    for family, build in BUILDERS.items():
        build(root / family, n_layer=3)
    return {family: load_model(root / family, device="cpu") for family in BUILDERS}


@pytest.mark.parametrize("family", BUILDERS)
def test_identity_translators_reproduce_the_logit_lens_exactly(tiny, family):
    handle = tiny[0][family]
    logit = logit_lens(PROMPT, model=handle, target=" Mary")
    tuned = logit_lens(PROMPT, model=handle, target=" Mary", lens=TunedLens.identity(handle))
    assert tuned.equals(logit)


@pytest.mark.parametrize("family", BUILDERS)
def test_training_lowers_held_out_kl_at_every_layer_below_the_last(deep, family):
    handle = deep[family]
    steps = []
    lens = train_tuned_lens(handle, texts(0, 64), steps=60, seed=0, seq_len=32, batch=4,
                            progress=lambda done, total: steps.append(done))
    assert steps == list(range(1, 61)) and lens.meta["steps"] == 60
    held_out = texts(1, 6)
    logit = pd_mean_kl([logit_lens(t, model=handle) for t in held_out])
    tuned = pd_mean_kl([logit_lens(t, model=handle, lens=lens) for t in held_out])
    last = handle.n_layers - 1
    assert tuned[last] == logit[last] == 0
    for layer in range(last):
        assert tuned[layer] < logit[layer], (layer, tuned, logit)


def pd_mean_kl(frames):
    import pandas as pd

    return pd.concat(frames).groupby("layer")["kl"].mean().to_dict()


def test_a_saved_lens_reloads_bit_identically_and_only_on_its_model(tiny, tmp_path):
    handle, other = tiny[0]["gpt2"], tiny[0]["pythia"]
    lens = train_tuned_lens(handle, texts(0, 8), steps=3, lr=1e-2, seed=0, seq_len=16)
    again = load(save(lens, tmp_path / "lens"), model=handle)
    for a, b in zip(lens.parameters(), again.parameters()):
        assert torch.equal(a, b)
    assert (again.source, again.digest, again.meta) == (lens.source, lens.digest, lens.meta)
    assert logit_lens(PROMPT, model=handle, lens=again).equals(logit_lens(PROMPT, model=handle, lens=lens))
    with pytest.raises(ValueError, match="model: this tuned lens was trained for"):
        load(tmp_path / "lens", model=other)
    with pytest.raises(ValueError, match="lens: this tuned lens was trained for"):
        logit_lens(PROMPT, model=other, lens=again)


def test_a_lens_is_refused_on_another_checkpoint_of_the_same_shape(tiny, tmp_path):
    build_gpt2(tmp_path / "g", seed=7)
    other = load_model(tmp_path / "g", device="cpu")
    lens = TunedLens.identity(tiny[0]["gpt2"])
    with pytest.raises(ValueError, match="lens: this tuned lens was trained for"):
        logit_lens(PROMPT, model=other, lens=lens)


def test_the_corpus_may_be_a_text_file_or_a_saved_suite(tiny, tmp_path):
    from datasets import Dataset, DatasetDict

    handle = tiny[0]["mamba"]
    (tmp_path / "corpus.txt").write_text(" ".join(texts(0, 4)))
    DatasetDict({"ioi": Dataset.from_dict({"text": texts(2, 4)})}).save_to_disk(str(tmp_path / "suite"))
    for corpus in (tmp_path / "corpus.txt", tmp_path / "suite"):
        lens = train_tuned_lens(handle, corpus, steps=1, seed=0, seq_len=16)
        assert lens.meta["steps"] == 1 and lens.meta["tokens"] >= 16


@pytest.mark.parametrize("corpus,match", [
    (["", "   "], "texts: every text tokenises to nothing"),
    ([], "texts must be a non-empty list"),
    (["ok", 3], r"texts\[1\] must be a string"),
    ("/no/such/corpus", "texts must be a list of strings"),
    (["ok", "a\ud800b"], r"texts\[1\]: .* lone surrogate U\+D800"),
])
def test_a_corpus_without_tokens_is_refused(tiny, corpus, match):
    with pytest.raises(ValueError, match=match):
        train_tuned_lens(tiny[0]["gpt2"], corpus, steps=1, seed=0)


@pytest.mark.parametrize("family", BUILDERS)
def test_a_steps_gradient_is_that_of_the_kl_to_the_final_distribution(tiny, family):
    """Against autograd of KL(p_L ‖ p_l) written out (log_softmax of the decoded layer, the
    model's own logits for p_L) on a lens away from identity: equal with the head in float32,
    within bfloat16's rounding (cosine > 0.99) with the default head; the reported KL as well."""
    from compare.analyses.lens import decode
    from compare.analyses.tuned_lens import _step

    handle = tiny[0][family]
    rows = handle.as_input([handle.encode(t)[:12] for t in texts(3, 2)])
    lens = TunedLens.identity(handle)
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for w in lens.weight:
            w.copy_(0.1 * torch.randn(w.shape, generator=g))
    final_logp = torch.log_softmax(handle.logits(rows).float(), -1)
    for head_dtype, tolerance in ((torch.float32, 1e-5), (torch.bfloat16, None)):
        lens.zero_grad(set_to_none=True)
        kl = _step(handle, lens, rows, [0], head_dtype)
        hidden = {}
        hook = handle.arch.hook(handle.module, handle.arch.lens_point, 0, lambda v: hidden.__setitem__(0, v.detach()))
        try:
            handle.logits(rows)
        finally:
            hook.remove()
        logp = torch.log_softmax(decode(handle, hidden[0], 0, lens), -1)
        reference = (final_logp.exp() * (final_logp - logp)).sum(-1).mean()
        expected = torch.autograd.grad(reference, [lens.weight[0], lens.bias[0]])
        for got, want in zip((lens.weight[0].grad, lens.bias[0].grad), expected):
            if tolerance:
                torch.testing.assert_close(got, want, rtol=tolerance, atol=1e-7)
            else:
                assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.99
        assert kl[0] == pytest.approx(float(reference.detach()), rel=1e-4 if tolerance else 2e-2)


def test_a_head_dtype_other_than_bfloat16_or_float32_is_refused(tiny):
    with pytest.raises(ValueError, match="head_dtype must be one of bfloat16, float32"):
        train_tuned_lens(tiny[0]["gpt2"], texts(0, 4), steps=1, seed=0, head_dtype="float16")


def test_a_corpus_file_that_is_not_utf8_text_is_refused_naming_it(tiny, tmp_path):
    (tmp_path / "corpus.bin").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ValueError, match=r"texts: .*corpus.bin is not UTF-8 text"):
        train_tuned_lens(tiny[0]["gpt2"], tmp_path / "corpus.bin", steps=1, seed=0)


@pytest.mark.parametrize("lr", [float("inf"), float("nan"), 0, -1e-3, True, "1e-3"])
def test_a_learning_rate_not_finite_and_positive_is_refused(tiny, lr):
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got"):
        train_tuned_lens(tiny[0]["gpt2"], texts(0, 4), steps=1, seed=0, lr=lr)


def test_a_numpy_learning_rate_is_taken_and_saved_as_a_float(tiny, tmp_path):
    lens = train_tuned_lens(tiny[0]["gpt2"], texts(0, 4), steps=1, seed=0, seq_len=16, lr=np.float32(0.01))
    assert type(lens.meta["lr"]) is float and lens.meta["lr"] == pytest.approx(0.01)
    assert load(save(lens, tmp_path / "lens")).meta["lr"] == lens.meta["lr"]


def _edit_json(**fields):
    def edit(directory):
        info = json.loads((directory / "lens.json").read_text())
        info.update(fields)
        (directory / "lens.json").write_text(json.dumps({k: v for k, v in info.items() if v is not None}))
    return edit


def _nan_weight(directory):
    from safetensors.torch import load_file, save_file

    tensors = load_file(directory / "lens.safetensors")
    tensors["weight.0"][0, 0] = float("nan")
    save_file(tensors, directory / "lens.safetensors")


@pytest.mark.parametrize("corrupt,match", [
    (lambda d: (d / "lens.safetensors").write_bytes((d / "lens.safetensors").read_bytes()[:100]),
     r"lens.safetensors is not a readable safetensors file"),
    (lambda d: (d / "lens.json").write_text("{not json"), r"lens.json is not the JSON that save writes"),
    (lambda d: (d / "lens.json").write_text("[1, 2]"), r"lens.json must be a JSON object with source \(str\)"),
    (_edit_json(digest=None), r"lens.json's 'digest' must be a str"),
    (_edit_json(n_layers=True), r"lens.json's 'n_layers' must be an integer ≥ 1"),
    (_edit_json(d=16), r"weight.0 must be a finite float tensor of shape \[16, 16\] \(d = 16 in lens.json\), got "
                       r"torch.float32 \[32, 32\]"),
    (_edit_json(n_layers=4), r"must hold weight.l \[32, 32\] and bias.l \[32\] for l in 0..2 .*missing"),
    (_nan_weight, r"weight.0 must be a finite float tensor .* with NaN or inf"),
])
def test_a_damaged_saved_lens_is_refused_naming_the_file_and_what_it_must_hold(tiny, tmp_path, corrupt, match):
    """Each damage an edited, truncated or mixed-up lens folder may carry: a ValueError naming the
    argument and the file, never a JSON, safetensors or shape error from deep inside, nor a lens
    that decodes to NaN."""
    directory = save(TunedLens.identity(tiny[0]["gpt2"]), tmp_path / "lens")
    corrupt(directory)
    with pytest.raises(ValueError, match=r"directory: .*" + match):
        load(directory, model=tiny[0]["gpt2"])


def test_a_lens_stopped_midway_saves_and_reloads_with_the_steps_done(tiny, tmp_path):
    import threading

    handle, stop = tiny[0]["gpt2"], threading.Event()
    lens = train_tuned_lens(handle, texts(0, 8), steps=10, lr=1e-2, seed=0, seq_len=16, stop=stop,
                            progress=lambda done, total: stop.set() if done == 2 else None)
    again = load(save(lens, tmp_path / "lens"), model=handle)
    assert again.meta["steps"] == 2 and again.meta["steps_asked"] == 10
    for a, b in zip(lens.parameters(), again.parameters()):
        assert torch.equal(a, b)


def test_saving_something_else_or_into_a_file_is_refused_naming_the_argument(tiny, tmp_path):
    (tmp_path / "taken").write_text("")
    with pytest.raises(ValueError, match=r"directory: .*taken is a file; give a folder"):
        save(TunedLens.identity(tiny[0]["gpt2"]), tmp_path / "taken")
    with pytest.raises(ValueError, match="lens: must be a TunedLens .*got dict"):
        save({"weight.0": torch.zeros(2, 2)}, tmp_path / "lens")
