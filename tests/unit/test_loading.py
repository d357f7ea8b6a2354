"""`load_model` in every format, tokenizer resolution, and the errors a user can hit."""
import json
import shutil

import pytest
import torch

from compare import ModelLoadError, load_model
from conftest import TINY_VOCAB, build_gpt2, shared_tokenizer

IDS = [2, 3, 4, 5, 6, 7, 8, 9]


@pytest.mark.parametrize("name,family", [("gpt2", "gpt2"), ("mamba", "mamba"), ("mamba_ssm", "mamba"),
                                         ("pythia", "pythia")])
def test_each_format_loads_and_matches_transformers(tiny, name, family):
    handles, refs = tiny
    h = handles[name]
    assert (h.family, h.n_layers, h.vocab_size) == (family, 2, TINY_VOCAB)
    with torch.no_grad():
        expected = refs[name](torch.tensor([IDS])).logits[..., :TINY_VOCAB]
    got = h.logits(IDS)
    assert got.shape == (1, len(IDS), TINY_VOCAB)  # padding rows 64..71 are cut off
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_handle_exposes_hook_points_and_nnsight(tiny):
    handles, _ = tiny
    assert {"h", "delta", "A_bar", "B_bar", "write", "y", "resid_post"} <= set(handles["mamba"].hook_points)
    assert {"q", "k", "v", "pattern", "attn_out", "mlp_out"} <= set(handles["gpt2"].hook_points)
    g = handles["gpt2"]
    with g.nn.trace(torch.tensor([IDS])):
        pattern = g.point("pattern", 1).save()
        attn = g.point("attn_out", 1).save()
        mid = g.point("resid_mid", 1).save()
        post = g.point("resid_post", 1).save()
    assert pattern.shape == (1, 4, len(IDS), len(IDS))
    torch.testing.assert_close(pattern.sum(-1), torch.ones(1, 4, len(IDS)))  # rows are distributions
    assert torch.all(pattern.triu(1) == 0)  # causal
    assert torch.allclose(post - mid, post - mid) and mid.shape == attn.shape


def test_tokenizer_argument_used_when_directory_has_none(tmp_path, tiny_dirs):
    dirs, _ = tiny_dirs
    bare = tmp_path / "bare"
    build_gpt2(bare, with_tokenizer=False)
    h = load_model(bare, tokenizer=dirs["gpt2"], device="cpu")
    assert h.encode("Mary and John") == [3, 4, 5]


def test_real_neox_tokenizer_with_padded_embedding(tmp_path):
    from conftest import build_mamba_hf

    neox = shared_tokenizer("gpt-neox-20b")
    build_mamba_hf(tmp_path / "m", vocab=50280, with_tokenizer=False, n_layer=1)
    h = load_model(tmp_path / "m", tokenizer=neox, device="cpu")
    assert h.vocab_size == 50277  # the real vocabulary, not the 50280 padded rows
    assert h.encode(" Mary") == [6393]
    assert h.logits(h.encode("When Mary and John went to the store, John gave a drink to")).shape == (1, 14, 50277)


def test_real_gpt2_tokenizer_ids():
    gpt2 = shared_tokenizer("gpt2")
    assert gpt2.encode(" Mary") == [5335]
    assert len(gpt2.encode("When Mary and John went to the store, John gave a drink to")) == 14
    assert len(gpt2) == 50257


def test_unknown_alias_lists_the_known_ones():
    with pytest.raises(ModelLoadError, match="unknown model alias 'mamba-9000'.*mamba-130m"):
        load_model("mamba-9000")


def test_unreachable_hub_gives_one_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=r"(?s)'nobody/no-such-mamba'.*local directory|pass the directory"):
        load_model("nobody/no-such-mamba")


def test_directory_of_neither_format(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(ModelLoadError, match=r"not a checkpoint of a known family \(Mamba, Mamba-2, GPT-2, Pythia, "
                                             r"Granite-4\.0-H, Falcon-H1, Nemotron-H\)"):
        load_model(tmp_path)
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path / "..")


def test_tokenizer_larger_than_embedding_is_refused(tmp_path, tiny_dirs):
    dirs, _ = tiny_dirs
    build_gpt2(tmp_path / "small", vocab=40, with_tokenizer=False)
    with pytest.raises(ModelLoadError, match="64 tokens but the model's embedding has only 40 rows"):
        load_model(tmp_path / "small", tokenizer=dirs["gpt2"])


def test_mamba_ssm_checkpoint_with_wrong_shapes_is_refused(tmp_path, tiny_dirs):
    dirs, _ = tiny_dirs
    shutil.copytree(dirs["mamba_ssm"], tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "d_model": 48}))
    with pytest.raises(ModelLoadError, match="expected"):
        load_model(tmp_path / "m")


@pytest.mark.parametrize("bad,message", [
    ([], "empty input"),
    ([3, 64], r"\[64\] are outside the vocabulary; allowed 0..63"),
    ([-1], "outside the vocabulary"),
])
def test_bad_token_ids(tiny, bad, message):
    handles, _ = tiny
    for h in handles.values():
        with pytest.raises(ValueError, match=message):
            h.logits(bad)


def test_gpt2_context_limit(tiny):
    handles, _ = tiny
    with pytest.raises(ValueError, match="1025 tokens exceed the model's context of 1024"):
        handles["gpt2"].logits([2] * 1025)
    assert handles["mamba"].logits([2] * 1025).shape == (1, 1025, TINY_VOCAB)  # Mamba has no such limit


def test_bad_device_and_dtype(tiny_dirs):
    dirs, _ = tiny_dirs
    with pytest.raises(ValueError, match="dtype must be one of float32, float16, bfloat16"):
        load_model(dirs["gpt2"], dtype="int8")
    with pytest.raises(ValueError, match="device must be like"):
        load_model(dirs["gpt2"], device="gpu-please")


def test_bfloat16_mamba_runs_its_scan_in_fp32(tiny_dirs):
    dirs, _ = tiny_dirs
    full = load_model(dirs["mamba"], device="cpu").logits(IDS)
    half = load_model(dirs["mamba"], device="cpu", dtype="bfloat16").logits(IDS)
    assert half.dtype == torch.float32 and (half - full).abs().max() < 0.25
