"""Bad input must be loud, never silently wrong: corrupt checkpoints, oversized configs, weights
that are not finite floats, a tokenizer from another family, token IDs that are not integers,
and logits that are not finite. Each case is a clear error naming what was wrong.

New API is imported inside the tests, so that the file also runs against older code.
"""
import functools
import json
import shutil

import numpy as np
import pytest
import torch

from compare import ModelLoadError, load_model
from conftest import TINY_VOCAB, build_gpt2, build_mamba_hf, shared_tokenizer

FORMATS = ("gpt2", "mamba", "mamba_ssm", "pythia", "mamba2")
# per format: the key for the residual width and the key for the number of layers
WIDTH = {"gpt2": "n_embd", "mamba": "hidden_size", "mamba_ssm": "d_model", "pythia": "hidden_size", "mamba2": "hidden_size"}
LAYERS = {"gpt2": "n_layer", "mamba": "num_hidden_layers", "mamba_ssm": "n_layer", "pythia": "num_hidden_layers",
          "mamba2": "num_hidden_layers"}
IDS = [2, 3, 4, 5, 6]


@pytest.fixture
def copy_of(tiny_dirs, tmp_path):
    """A writable copy of a tiny model directory, by format name."""
    def copy(name):
        return shutil.copytree(tiny_dirs[0][name], tmp_path / name)
    return copy


def edit_config(directory, **changes):
    path = directory / "config.json"
    config = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps({k: v for k, v in config.items() if v is not DELETE}))


DELETE = object()


def weights_file(directory):
    return next(directory / f for f in ("model.safetensors", "pytorch_model.bin") if (directory / f).is_file())


def rewrite_weights(directory, transform):
    """Replace the weights file's state dict by transform(state), in the same format."""
    from safetensors.torch import load_file, save_file

    path = weights_file(directory)
    if path.suffix == ".safetensors":
        save_file(transform(load_file(path)), path)
    else:
        torch.save(transform(torch.load(path, weights_only=True)), path)


# --- config.json -------------------------------------------------------------------------------

@pytest.mark.parametrize("content,message", [
    (b'{"model_type": "gpt2", "n_embd": 32,', "not valid JSON"),
    (b"", "not valid JSON"),
    (b"[1, 2, 3]", "must hold a JSON object"),
    (b'{"model_type": "gpt2", "name": "\xff\xfe"}', "not UTF-8"),
])
def test_unreadable_config_is_one_load_error_naming_the_file(copy_of, content, message):
    directory = copy_of("gpt2")
    (directory / "config.json").write_bytes(content)
    with pytest.raises(ModelLoadError, match=f"config.json.*{message}"):
        load_model(directory, device="cpu")


@pytest.mark.parametrize("name", FORMATS)
def test_missing_size_key_is_named(copy_of, name):
    directory = copy_of(name)
    edit_config(directory, **{WIDTH[name]: DELETE})
    with pytest.raises(ModelLoadError, match=f"config.json: missing key '{WIDTH[name]}'"):
        load_model(directory, device="cpu")


@pytest.mark.parametrize("value", ["two", 2.0, 2.5, True, 0, -5, None])
@pytest.mark.parametrize("name", FORMATS)
def test_size_that_is_not_a_positive_int_is_refused_naming_the_key(copy_of, name, value):
    directory = copy_of(name)
    edit_config(directory, **{LAYERS[name]: value})
    with pytest.raises(ModelLoadError, match=f"{LAYERS[name]} must be a positive integer, got {value!r}"):
        load_model(directory, device="cpu")


@pytest.mark.parametrize("value", [0, -5, 32.0, False])
def test_nested_mamba_ssm_size_is_checked(copy_of, value):
    directory = copy_of("mamba_ssm")
    edit_config(directory, ssm_cfg={"d_state": value})
    with pytest.raises(ModelLoadError, match=f"ssm_cfg: d_state must be a positive integer, got {value!r}"):
        load_model(directory, device="cpu")


# --- memory ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mamba", "mamba_ssm"])
def test_absurd_width_is_refused_before_allocation(copy_of, name):
    directory = copy_of(name)
    edit_config(directory, **{WIDTH[name]: 10**6})  # ~4·10¹² parameters
    with pytest.raises(ModelLoadError, match=r"parameters: about .* GiB in fp32 .*memory available"):
        load_model(directory, device="cpu")


@pytest.mark.parametrize("name", FORMATS)
def test_config_larger_than_available_memory_is_refused_with_estimate_and_limit(copy_of, monkeypatch, name):
    monkeypatch.setattr("compare.base.memory.available_bytes", lambda: 4096, raising=False)
    built = []
    monkeypatch.setattr("compare.base.checkpoint.read_weights", lambda *a: built.append(a), raising=False)
    with pytest.raises(ModelLoadError, match=r"parameters: about .* in fp32 .*more than the .* of memory available"):
        load_model(copy_of(name), device="cpu")
    assert not built  # refused before the weights are read or the model is built


@pytest.mark.parametrize("name", FORMATS)
def test_parameter_estimate_is_exact_for_each_format(tiny, tiny_dirs, name):
    from compare.base import checkpoint

    config = checkpoint.read_config(tiny_dirs[0][name])
    estimate = tiny[0][name].arch.parameter_count(config, tiny_dirs[0][name])
    assert estimate == sum(p.numel() for p in tiny[0][name].module.parameters())


# --- weights files -----------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["empty", "truncated", "missing"])
@pytest.mark.parametrize("name", FORMATS)
def test_damaged_weights_file_is_one_load_error_naming_it(copy_of, name, damage):
    directory = copy_of(name)
    path = weights_file(directory)
    data = path.read_bytes()
    if damage == "missing":
        path.unlink()
        message = "no weights"
    else:
        path.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
        message = f"{path.name}: not a readable"
    with pytest.raises(ModelLoadError, match=message):
        load_model(directory, device="cpu")


@pytest.mark.parametrize("name", FORMATS)
def test_weights_of_other_shapes_than_the_config_are_refused(copy_of, name):
    directory = copy_of(name)
    # Mamba-2's config must stay consistent (num_heads × head_dim = expand × width) to reach the weights
    edit_config(directory, **{WIDTH[name]: 48}, **({"num_heads": 6} if name == "mamba2" else {}))
    with pytest.raises(ModelLoadError, match=r"(model\.safetensors|pytorch_model\.bin): .*"
                                             r"(do not match config\.json|expected)"):
        load_model(directory, device="cpu")


def test_gpt2_weights_missing_a_tensor_are_refused_not_reinitialised(copy_of):
    directory = copy_of("gpt2")
    rewrite_weights(directory, lambda s: {k: v for k, v in s.items() if k != "transformer.h.1.mlp.c_fc.weight"})
    with pytest.raises(ModelLoadError, match="lack tensors config.json needs: transformer.h.1.mlp.c_fc.weight"):
        load_model(directory, device="cpu")


def test_unsafe_pickle_is_refused_without_suggesting_weights_only_false(copy_of):
    directory = copy_of("mamba_ssm")
    rewrite_weights(directory, lambda s: {**s, "hook": functools.partial(print, "ran the file's code")})
    with pytest.raises(ModelLoadError, match="unsafe pickle refused") as caught:
        load_model(directory, device="cpu")
    assert "weights_only=False" not in str(caught.value)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool])
@pytest.mark.parametrize("name", FORMATS)
def test_integer_weights_are_refused_naming_a_tensor(copy_of, name, dtype):
    directory = copy_of(name)
    rewrite_weights(directory, lambda s: {k: v.to(dtype) for k, v in s.items()})
    with pytest.raises(ModelLoadError, match=rf"tensors .*\({dtype}\).* are not floating-point"):
        load_model(directory, device="cpu")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", FORMATS)
def test_non_finite_weight_is_refused_naming_the_tensor(copy_of, name, value):
    directory = copy_of(name)
    poisoned = {}

    def poison(state):
        # a weight (Pythia's layers also hold a non-weight bool mask, which the loader drops)
        key = sorted(k for k in state if ("layers.1." in k or "h.1." in k) and k.endswith("weight"))[0]
        poisoned["key"] = key
        state[key] = state[key].clone()
        state[key].view(-1)[0] = value
        return state

    rewrite_weights(directory, poison)
    with pytest.raises(ModelLoadError, match=rf"tensors {poisoned['key']} hold NaN or Inf"):
        load_model(directory, device="cpu")


@pytest.mark.parametrize("name", FORMATS)
def test_all_zero_weights_are_refused(copy_of, name):
    directory = copy_of(name)
    rewrite_weights(directory, lambda s: {k: torch.zeros_like(v) for k, v in s.items()})
    with pytest.raises(ModelLoadError, match="every weight is zero"):
        load_model(directory, device="cpu")


@pytest.mark.parametrize("name", FORMATS)
def test_all_zero_embedding_is_refused(copy_of, name):
    directory = copy_of(name)
    embedding = {"gpt2": "transformer.wte.weight", "mamba": "backbone.embeddings.weight",
                 "mamba_ssm": "backbone.embedding.weight", "pythia": "gpt_neox.embed_in.weight",
                 "mamba2": "backbone.embeddings.weight"}[name]
    rewrite_weights(directory, lambda s: {**s, embedding: torch.zeros_like(s[embedding])})
    with pytest.raises(ModelLoadError, match=f"the embedding {embedding} is all zero"):
        load_model(directory, device="cpu")


# --- tokenizer from another family ------------------------------------------------------------

def mamba_ssm_with_neox_rows(directory):
    """An original mamba_ssm checkpoint with GPT-NeoX's real vocabulary: 50277 padded to 50280 rows."""
    hf = build_mamba_hf(directory / "_hf", vocab=50280, n_layer=1, with_tokenizer=False)
    torch.save({k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in hf.state_dict().items()},
               directory / "pytorch_model.bin")
    (directory / "config.json").write_text(json.dumps({
        "d_model": 32, "n_layer": 1, "vocab_size": 50277, "pad_vocab_size_multiple": 8,
        "ssm_cfg": {"d_state": 8}, "rms_norm": True}))


@pytest.fixture(scope="module")
def real_vocab_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_vocab")
    build_mamba_hf(root / "mamba", vocab=50280, n_layer=1, with_tokenizer=False)
    mamba_ssm_with_neox_rows(root / "mamba_ssm")
    build_gpt2(root / "gpt2", vocab=50257, n_layer=1, with_tokenizer=False)
    return root


@pytest.mark.parametrize("name", ["mamba", "mamba_ssm"])
def test_mamba_checkpoint_refuses_gpt2_tokenizer(real_vocab_dirs, name):
    gpt2 = shared_tokenizer("gpt2")
    with pytest.raises(ModelLoadError, match=r"(?s)GPT-NeoX-20B.*50257 tokens.*looks like GPT-2.*force_tokenizer=True"):
        load_model(real_vocab_dirs / name, tokenizer=gpt2, device="cpu")


@pytest.mark.parametrize("name", ["mamba", "mamba_ssm"])
def test_mamba_checkpoint_accepts_its_own_tokenizer(real_vocab_dirs, name):
    h = load_model(real_vocab_dirs / name, tokenizer=shared_tokenizer("gpt-neox-20b"), device="cpu")
    assert (h.vocab_size, h.encode(" Mary")) == (50277, [6393])


def test_gpt2_checkpoint_refuses_neox_tokenizer_and_accepts_its_own(real_vocab_dirs):
    with pytest.raises(ModelLoadError, match="50277 tokens but the model's embedding has only 50257 rows"):
        load_model(real_vocab_dirs / "gpt2", tokenizer=shared_tokenizer("gpt-neox-20b"), device="cpu")
    h = load_model(real_vocab_dirs / "gpt2", tokenizer=shared_tokenizer("gpt2"), device="cpu")
    assert h.encode(" Mary") == [5335]


def test_force_tokenizer_uses_another_family_on_purpose(real_vocab_dirs):
    h = load_model(real_vocab_dirs / "mamba", tokenizer=shared_tokenizer("gpt2"), device="cpu", force_tokenizer=True)
    assert (h.vocab_size, h.encode(" Mary")) == (50257, [5335])


# --- token IDs ---------------------------------------------------------------------------------

NOT_INTEGERS = {
    "numpy float64": np.array([1.0, 2.0]),
    "torch float32": torch.tensor([1.0, 2.0]),
    "list of floats": [1.0, 2.5],
    "whole floats in a list": [1.0, 2.0],
    "nested floats": [[1, 2.5]],
    "numpy bool": np.array([True, False]),
    "torch bool": torch.tensor([True, False]),
    "python bools": [True, 2],
}


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("ids", NOT_INTEGERS.values(), ids=NOT_INTEGERS.keys())
def test_non_integer_token_ids_are_refused(tiny, name, ids):
    with pytest.raises(TypeError, match="token IDs must be integers"):
        tiny[0][name].logits(ids)


HUGE = {"2**63": [2, 2**63], "2**70": [2**70], "numpy uint64 max": np.array([3, 2**64 - 1], dtype=np.uint64)}


@pytest.mark.parametrize("ids", HUGE.values(), ids=HUGE.keys())
def test_token_ids_beyond_int64_are_refused_naming_the_range(tiny, ids):
    with pytest.raises(ValueError, match=rf"outside the vocabulary; allowed 0..{TINY_VOCAB - 1}"):
        tiny[0]["mamba"].logits(ids)


@pytest.mark.parametrize("ids", [np.array(IDS, dtype=np.uint64), np.array(IDS, dtype=np.int32),
                                 torch.tensor(IDS, dtype=torch.int16), tuple(np.int64(i) for i in IDS)])
def test_integer_ids_of_any_integer_type_read_as_the_list(tiny, ids):
    h = tiny[0]["gpt2"]
    torch.testing.assert_close(h.logits(ids), h.logits(IDS), atol=0, rtol=0)


@pytest.mark.parametrize("ids", [np.array([2.0, 3.5]), torch.tensor([2.0, 3.0]), [2.0, 3.0]])
def test_compare_refuses_float_ids(tiny, ids):
    from compare import compare

    with pytest.raises(TypeError, match="must be"):
        compare(ids, [tiny[0]["gpt2"]], progress=False)


# --- non-finite logits -------------------------------------------------------------------------

def poisoned(tiny_dirs, name, edit):
    h = load_model(tiny_dirs[0][name], device="cpu")
    with torch.no_grad():
        edit(h.module)
    return h


def mixer_out(module, layer):
    return module.layers[layer].mixer.out_proj.weight if hasattr(module, "layers") \
        else module.transformer.h[layer].mlp.c_proj.weight


@pytest.mark.parametrize("value", [float("nan"), 1e38])  # 1e38: finite weights whose sums overflow
@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("name", ["gpt2", "mamba"])
def test_non_finite_logits_raise_naming_the_layer(tiny_dirs, name, layer, value):
    from compare import NonFiniteError

    h = poisoned(tiny_dirs, name, lambda m: mixer_out(m, layer).fill_(value))
    with pytest.raises(NonFiniteError, match=rf"NaN or infinite, first at position \d+ .* in layer {layer} \(of 2\)"):
        h.logits(IDS)


def test_non_finite_logits_name_the_first_position(tiny_dirs):
    from compare import NonFiniteError

    def poison_one_token(m):
        m.lm_head.weight = torch.nn.Parameter(m.embeddings.weight.clone())  # untied: only inputs of ID 5 are bad
        m.embeddings.weight[5] = float("nan")

    h = poisoned(tiny_dirs, "mamba", poison_one_token)  # causal: positions before the bad token stay finite
    with pytest.raises(NonFiniteError, match=r"first at position 3 \(token 'John'\) of batch row 0; .* in the embedding"):
        h.logits(IDS)


def test_locating_non_finite_values_leaves_no_hooks(tiny_dirs):
    from compare import NonFiniteError

    h = poisoned(tiny_dirs, "mamba", lambda m: mixer_out(m, 1).fill_(float("nan")))
    with pytest.raises(NonFiniteError):
        h.logits(IDS)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in h.module.modules())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_refused_naming_the_device(tiny_dirs):
    # torch said only "AssertionError: Torch not compiled with CUDA enabled", from deep in .to()
    dirs, _ = tiny_dirs
    with pytest.raises(ValueError, match=r"device: 'cuda:0' asks for CUDA, which this torch .* cannot use here "
                                         r".*; allowed values are 'cpu'"):
        load_model(dirs["gpt2"], device="cuda:0")

