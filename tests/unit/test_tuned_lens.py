"""The tuned lens: identity translators are the logit lens exactly, training lowers held-out KL at
every layer below the last on tiny random models of each family (and never raises it on the
windows it held out), the learning rate follows the linear schedule, a saved lens reloads
bit-identically (one saved before the schedule too) and is refused on another checkpoint, and an
empty corpus is refused."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from compare import load_model
from compare.analyses.lens import logit_lens
from compare.analyses.tuned_lens import TunedLens, corpus_ids, load, lr_at, save, train_tuned_lens
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
    from compare.analyses.lens import decode_layers
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
        logp = torch.log_softmax(decode_layers(handle, {0: hidden[0]}, lens)[0], -1)
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
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0 and at most 3.4e\+38 .*, got"):
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


@pytest.mark.parametrize("steps,warmup,lr,expected", [
    (4, 0, 2.0, [2.0, 1.5, 1.0, 0.5]),
    (5, 2, 1.0, [0.5, 1.0, 1.0, 2 / 3, 1 / 3]),
    (3, 1, 0.3, [0.3, 0.3, 0.15]),
    (1, 0, 1.0, [1.0]),
])
def test_the_learning_rate_rises_over_warmup_then_falls_linearly(steps, warmup, lr, expected):
    """Hand-computed: lr·(t + 1)/warmup while t < warmup, then lr·(steps − t)/(steps − warmup)."""
    assert [lr_at(t, steps, lr, warmup) for t in range(steps)] == pytest.approx(expected, rel=1e-12)


def test_each_step_runs_sgd_at_the_scheduled_rate_times_one_minus_momentum(tiny, monkeypatch):
    """The rate SGD steps at, read off the optimiser at each step, against the hand-computed
    schedule of steps = 5, warmup = 2, lr = 0.5 scaled by 1 − 0.9 (Nesterov momentum 0.9)."""
    seen = []
    original = torch.optim.SGD.step

    def spy(self, *args, **kwargs):
        seen.append([(g["lr"], g["momentum"], g["nesterov"]) for g in self.param_groups])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    lens = train_tuned_lens(tiny[0]["gpt2"], texts(0, 8), steps=5, warmup=2, lr=0.5, seed=0, seq_len=16)
    hand = [0.25, 0.5, 0.5, 1 / 3, 1 / 6]
    assert [[lr for lr, _, _ in groups] for groups in seen] == [[pytest.approx(0.1 * h)] for h in hand]
    assert all(m == 0.9 and nesterov for groups in seen for _, m, nesterov in groups)
    assert lens.meta["optimizer"]["name"] == "SGD" and lens.meta["schedule"]["warmup"] == 2
    assert lens.meta["schedule"]["lr_last"] == pytest.approx(0.5 / 3)


def _mean_kl(handle, rows, lens):
    return pd_mean_kl([logit_lens(row, model=handle, lens=lens) for row in rows])


@pytest.mark.parametrize("family", ["mamba", "pythia"])
def test_the_held_out_windows_are_never_trained_on_and_no_layer_decodes_them_worse(deep, family, monkeypatch):
    """The windows lens.meta names as held out are not among those the training steps read (a spy
    on the frozen forward), and on them, by `logit_lens` (an independent decode), the trained
    lens's KL is at most the logit lens's at every layer, as the meta's KLs say."""
    from compare.analyses import tuned_lens

    handle, read = deep[family], []
    original = tuned_lens._frozen
    monkeypatch.setattr(tuned_lens, "_frozen", lambda h, rows, layers: read.append(rows.clone()) or original(h, rows, layers))
    corpus = texts(0, 64)
    lens = train_tuned_lens(handle, corpus, steps=40, seed=0, seq_len=32, batch=4)
    windows = corpus_ids(handle, corpus, 32)
    held = lens.meta["held_out"]["windows"]
    assert len(held) == min(8, len(windows) // 10) > 0
    trained = torch.cat(read[:-1])  # the last call reads the held-out windows for the choice
    assert torch.equal(read[-1], windows[held])
    for i in held:
        assert not (trained == windows[i]).all(-1).any(), f"held-out window {i} was trained on"
    rows = [windows[i] for i in held]
    logit, tuned = _mean_kl(handle, rows, None), _mean_kl(handle, rows, lens)
    for layer in range(handle.n_layers - 1):
        assert tuned[layer] <= logit[layer], (layer, tuned, logit)
        assert lens.meta["held_out"]["kl_logit"][str(layer)] == pytest.approx(logit[layer], rel=1e-3, abs=1e-6)


def test_a_translator_that_decodes_the_held_out_windows_worse_is_reset_to_the_identity(deep):
    """At lr 1e4 the steps overshoot: the layers whose translator raised the held-out KL are
    listed as identity, hold W = 0 and b = 0, and decode exactly as the logit lens."""
    handle = deep["gpt2"]
    corpus = texts(0, 64)
    lens = train_tuned_lens(handle, corpus, steps=6, lr=1e4, seed=0, seq_len=32, batch=4)
    chosen = lens.meta["held_out"]
    reset = chosen["identity_layers"]
    assert reset, chosen
    for layer in range(handle.n_layers - 1):
        tuned_worse = not chosen["kl_tuned"][str(layer)] < chosen["kl_logit"][str(layer)]
        assert (layer in reset) == tuned_worse
    for layer in reset:
        assert not lens.weight[layer].any() and not lens.bias[layer].any()
    rows = corpus_ids(handle, corpus, 32)[chosen["windows"]]
    logit = logit_lens(rows[0], model=handle)
    tuned = logit_lens(rows[0], model=handle, lens=lens)
    for layer in reset:
        assert tuned[tuned.layer == layer].reset_index(drop=True).equals(logit[logit.layer == layer].reset_index(drop=True))


def test_a_corpus_of_under_ten_windows_holds_none_out(tiny):
    lens = train_tuned_lens(tiny[0]["gpt2"], texts(0, 2), steps=2, seed=0, seq_len=16)
    assert lens.meta["windows"] < 10 and lens.meta["held_out"] == {"windows": []}


@pytest.mark.parametrize("warmup,match", [
    (-1, r"warmup must be an integer ≥ 0, got -1"),
    (1.5, r"warmup must be an integer ≥ 0, got 1.5"),
    (True, r"warmup must be an integer ≥ 0, got True"),
    (4, r"warmup must be below steps \(4\) so that the learning rate decays after it, got 4"),
])
def test_a_warmup_not_below_steps_or_not_a_count_is_refused(tiny, warmup, match):
    with pytest.raises(ValueError, match=match):
        train_tuned_lens(tiny[0]["gpt2"], texts(0, 4), steps=4, seed=0, warmup=warmup)


def test_a_lens_saved_before_the_schedule_still_loads_and_decodes(tiny, tmp_path):
    """lens.json as the Adam version wrote it (meta without optimizer, schedule or held_out) and
    its safetensors written by hand: it loads on its model, keeps its meta, and with W = 0 and
    b = 0 decodes as the logit lens."""
    from compare.analyses.tuned_lens import weights_digest
    from safetensors.torch import save_file

    handle = tiny[0]["gpt2"]
    n, d = handle.n_layers, handle.arch.dims(handle.module.config)["d"]
    directory = tmp_path / "old"
    directory.mkdir()
    save_file({f"{kind}.{l}": torch.zeros((d, d) if kind == "weight" else (d,))
               for kind in ("weight", "bias") for l in range(n - 1)}, directory / "lens.safetensors")
    old_meta = {"steps": 3, "steps_asked": 3, "lr": 0.001, "seed": 0, "seq_len": 16, "batch": 1,
                "head_dtype": "bfloat16", "windows": 4, "tokens": 64, "seconds": 1.5, "kl_last_step": {"0": 0.5}}
    (directory / "lens.json").write_text(json.dumps({
        "source": handle.name, "family": handle.family, "digest": weights_digest(handle), "n_layers": n, "d": d,
        "meta": old_meta}))
    lens = load(directory, model=handle)
    assert lens.meta == old_meta
    assert logit_lens(PROMPT, model=handle, lens=lens).equals(logit_lens(PROMPT, model=handle))
