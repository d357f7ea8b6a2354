"""On a CUDA machine with the [cuda] extra: our Mamba agrees with mamba_ssm's fused kernels.

Skipped without CUDA or mamba_ssm (they cannot build on a CPU-only machine).
"""
import pytest
import torch

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def mamba_ssm_models():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    models = pytest.importorskip("mamba_ssm.models.mixer_seq_simple", reason="needs the [cuda] extra (mamba-ssm)")
    config = pytest.importorskip("mamba_ssm.models.config_mamba")
    from compare.mamba import MambaConfig, MambaLM, init_random_

    torch.manual_seed(0)
    ref = models.MambaLMHeadModel(config.MambaConfig(d_model=768, n_layer=24, vocab_size=50277,
                                                     ssm_cfg={"layer": "Mamba1"}), device="cuda",
                                  dtype=torch.float32)
    init_random_(ref, seed=0, n_layer=24)
    ours = MambaLM(MambaConfig(d_model=768, n_layer=24, vocab_size=ref.backbone.embedding.weight.shape[0]))
    ours.load_checkpoint(ref.state_dict())
    return ref.eval(), ours.cuda().eval()


@pytest.mark.parametrize("T", [14, 1024])
def test_logits_match_mamba_ssm_kernels(mamba_ssm_models, T):
    ref, ours = mamba_ssm_models
    ids = torch.randint(0, 50277, (2, T), generator=torch.Generator().manual_seed(T)).cuda()
    with torch.no_grad():
        diff = (ours(ids) - ref(ids).logits).abs().max().item()
    assert diff <= 1e-4, f"max |Δlogit| = {diff:.2e} at T={T}"
