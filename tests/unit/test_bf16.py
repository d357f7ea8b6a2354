"""dtype="bfloat16": weights and matmuls in bf16, the scan, its state and the residual stream in
fp32, logits in fp32; accurate to a stated tolerance against independent fp32 references.

Tolerances (tiny models, 4 prompts × 40 positions, logits up to ~6 in size; measured in
brackets): max |ΔL| ≤ 0.03 · max |L| (Mamba 0.012, GPT-2 0.013, Pythia 0.010), max |ΔP| ≤ 0.03
(0.010, 0.006, 0.004), top-1 agreement ≥ 95 % of positions (98.75 %, 98.75 %, 100 %). bf16 keeps
8 bits of mantissa: each matmul input rounds by up to 2⁻⁹ relative.
"""
import warnings

import pytest
import torch

from compare import load_model
from compare.ssm import native
from compare.ssm.mamba import MambaConfig, MambaLM
from compare.handle.model import cast_module, parse_dtype

IDS = torch.randint(0, 64, (4, 40), generator=torch.Generator().manual_seed(0))
LOGIT_REL, MAX_DP, TOP1 = 0.03, 0.03, 0.95


@pytest.fixture(scope="module")
def bf16_models(tiny_dirs):
    dirs, refs = tiny_dirs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # this CPU may lack bf16 hardware (tested below)
        return {name: load_model(dirs[name], device="cpu", dtype="bfloat16") for name in ("mamba", "gpt2", "pythia")}, refs


@pytest.mark.parametrize("name", ["mamba", "gpt2", "pythia"])
def test_bf16_logits_are_fp32_and_close_to_the_fp32_reference(bf16_models, name):
    """Against transformers' own fp32 model (not our fp32 path): the whole error is bf16's."""
    handles, refs = bf16_models
    got = handles[name].logits(IDS)
    with torch.no_grad():
        expected = refs[name](IDS).logits[..., :64].float()
    assert handles[name].dtype == torch.bfloat16 and got.dtype == torch.float32
    assert (got - expected).abs().max() <= LOGIT_REL * expected.abs().max()
    assert (got.softmax(-1) - expected.softmax(-1)).abs().max() <= MAX_DP
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= TOP1


def test_bf16_mamba_keeps_conv_scan_state_and_residual_in_fp32(bf16_models, tiny):
    handle = bf16_models[0]["mamba"]
    mixer = handle.module.layers[0].mixer
    assert mixer.in_proj.weight.dtype == mixer.x_proj.weight.dtype == mixer.out_proj.weight.dtype == torch.bfloat16
    assert handle.module.lm_head.weight is handle.module.embeddings.weight  # still tied
    fp32 = tiny[0]["mamba"].module.layers[0].mixer
    for name in ("A_log", "D", "conv1d.weight", "conv1d.bias"):  # fp32 values, never rounded through bf16
        assert torch.equal(mixer.get_parameter(name), fp32.get_parameter(name)), name
    seen = {}
    hooks = [getattr(mod, f"hook_{p}").register_forward_hook(lambda m, i, out, p=p: seen.__setitem__(p, out.dtype))
             for mod, points in ((handle.module.layers[1], ("resid_pre", "norm", "resid_post", "mixer_out")),
                                 (handle.module.layers[1].mixer, ("gate", "x", "delta", "B", "C", "h", "y")))
             for p in points]
    try:
        handle.logits(IDS[:1])
    finally:
        for h in hooks:
            h.remove()
    fp32_points = {"resid_pre", "resid_post", "x", "delta", "B", "C", "h", "y"}
    assert seen == {p: torch.float32 if p in fp32_points else torch.bfloat16 for p in seen} and len(seen) == 11


def test_bf16_state_edit_matches_the_fp32_edit(bf16_models, tiny):
    """h read and edited in a trace (the materialised fp32 scan inside a bf16 model)."""
    noise = torch.randn(2, 64, 8, generator=torch.Generator().manual_seed(1)) * 0.5
    results = []
    for handle in (tiny[0]["mamba"], bf16_models[0]["mamba"]):
        with handle.nn.trace(IDS[:1]):
            handle.point("h", 0)[0, [3, 9]] += noise
            results.append(handle.point("logits").save().float())
    edited_fp32, edited_bf16 = results
    clean = tiny[0]["mamba"].logits(IDS[:1])
    assert (edited_bf16 - edited_fp32).abs().max() <= LOGIT_REL * edited_fp32.abs().max()
    assert (edited_fp32[0, -1, :64] - clean[0, -1]).abs().max() > 1e-2  # the edit mattered


def test_dtype_names_the_allowed_values(tiny_dirs):
    with pytest.raises(ValueError, match="dtype must be one of float32, float16, bfloat16, got 'bf16'"):
        load_model(tiny_dirs[0]["mamba"], dtype="bf16")
    with pytest.raises(ValueError, match="got torch.int8"):
        parse_dtype(torch.int8)


@pytest.mark.parametrize("flags,warns", [(frozenset({"avx2"}), True), (None, True),
                                         (frozenset({"avx2", "amx_bf16"}), False),
                                         (frozenset({"avx512_bf16"}), False)])
def test_bf16_on_a_cpu_without_bf16_hardware_warns_once(monkeypatch, flags, warns):
    monkeypatch.setattr(native, "cpu_flags", lambda: flags)
    monkeypatch.setattr(native, "_WARNED", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            cast_module(MambaLM(MambaConfig(d_model=16, n_layer=1, vocab_size=32)), "bfloat16")
        cast_module(MambaLM(MambaConfig(d_model=16, n_layer=1, vocab_size=32)), "float32")
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == (1 if warns else 0)
    if warns:
        assert "slower than in float32" in messages[0] and "AMX-BF16" in messages[0]


PROMPT = "When Mary and John went to the store , John gave a drink to"


def test_a_sweep_by_source_loads_the_model_in_the_dtype(tiny_dirs, tiny):
    """noise_sweep(model=<source>, dtype="bfloat16") loads (and caches) the model in bf16; the
    batched engine (rays restarted through bf16 in_proj projections) gives the p_target of one
    plain trace per run on that bf16 model (`noise_sweep_ref`), and the hits of the fp32 sweep."""
    from compare.handle import loading
    from compare import noise_sweep
    from compare.analyses.noise_ref import noise_sweep_ref

    source = str(tiny_dirs[0]["mamba"])
    kw = dict(target=" Mary", component="h", layers=[0, 1], levels=[0.0, 0.5, 1.0, 2.0, 4.0], trials=2, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        half = noise_sweep(PROMPT, model=source, dtype="bfloat16", **kw)
        handle = loading.cached_model(source, dtype="bfloat16")
    assert handle.dtype == torch.bfloat16
    ref = noise_sweep_ref(PROMPT, model=handle, **kw)
    assert (half["p_target"] - ref["p_target"]).abs().max() <= MAX_DP
    full = noise_sweep(PROMPT, model=tiny[0]["mamba"], **kw)
    assert (half["hit"] == full["hit"]).mean() >= 0.9
    assert (half["p_target"] - full["p_target"]).abs().max() <= MAX_DP


def test_a_loaded_model_in_another_dtype_is_refused(tiny):
    from compare import noise_sweep

    with pytest.raises(ValueError, match="dtype='bfloat16': model is already loaded, in torch.float32"):
        noise_sweep(PROMPT, model=tiny[0]["mamba"], dtype="bfloat16", target=" Mary", component="h", levels=[1.0])


def test_compare_and_channels_by_source_in_bf16(tiny_dirs):
    from compare import compare
    from compare.analyses.channels import channel_sensitivity

    dirs, refs = tiny_dirs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = compare(PROMPT, [str(dirs["mamba"]), str(dirs["gpt2"])], variant="native", dtype="bfloat16",
                         progress=False)
        channels = channel_sensitivity(PROMPT, model=str(dirs["mamba"]), dtype="bfloat16", target=" Mary",
                                       component="h", layer=0, level=1.0, trials=2)
    ids = torch.tensor([[2, 3, 4, 5, 6, 7, 8, 9, 10, 5, 11, 12, 13, 7]])  # PROMPT in the tiny vocabulary
    for name, run in result.runs.items():
        with torch.no_grad():
            expected = refs[name](ids).logits[0, :, :64].double().numpy()
        assert abs(run.logits - expected).max() <= LOGIT_REL * abs(expected).max()
    assert len(channels) == 64 + 8  # every channel and every state index of h


def test_the_app_loads_its_models_in_the_configured_dtype(tiny_dirs, monkeypatch):
    from ui import models

    dirs, _ = tiny_dirs
    monkeypatch.setattr(models, "_configured", {})
    monkeypatch.delenv(models.DTYPE_ENV, raising=False)
    models.configure(mamba=str(dirs["mamba"]), gpt2=str(dirs["gpt2"]))
    fp32_key = models.key()
    with pytest.raises(ValueError, match="dtype must be one of float32, float16, bfloat16, got 'bf16'"):
        models.configure(dtype="bf16")
    models.configure(dtype="bfloat16")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert models.get("mamba").dtype == models.load(str(dirs["gpt2"])).dtype == torch.bfloat16
    assert models.key() != fp32_key  # cached examples of fp32 models are not shown for bf16 ones
