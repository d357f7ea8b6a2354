"""On a CUDA machine: our Mamba agrees with mamba_ssm's fused kernels, and every GPU path of ours
with the CPU's.

Marked `cuda`; skipped without a CUDA device, the mamba_ssm comparisons also without the [cuda]
extra (it cannot build on a CPU-only machine). `benchmarks/gpu_check.sh` installs and runs it.
Tolerances: fp32 ≤ 1e-4 in the logits (as on CPU against transformers); bf16 (both sides in
bf16, residual stream fp32): each within 2 × the other's error against mamba_ssm's fp32 plus
0.02, and top-1 agreement with fp32 ≥ 95 % of positions.
"""
import contextlib

import pytest
import torch

from compare.ssm import cuda
from compare.ssm.mamba import MambaConfig, MambaLM, init_random_
from compare.ssm.scan import linear_scan_parallel, linear_scan_ref, selective_scan_parallel, selective_scan_ref

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

SHAPE = dict(d_model=768, n_layer=24, vocab_size=50280)  # mamba-130m, vocabulary padded to a multiple of 8
IDS_T = (14, 1024)


def _ids(T, b=2):
    return torch.randint(0, 50277, (b, T), generator=torch.Generator().manual_seed(T)).cuda()


@pytest.fixture(scope="module")
def mamba_ssm_models():
    models = pytest.importorskip("mamba_ssm.models.mixer_seq_simple", reason="needs the [cuda] extra (mamba-ssm)")
    config = pytest.importorskip("mamba_ssm.models.config_mamba")
    torch.manual_seed(0)
    cfg = config.MambaConfig(d_model=768, n_layer=24, vocab_size=50277, ssm_cfg={"layer": "Mamba1"})
    ref = models.MambaLMHeadModel(cfg, device="cuda", dtype=torch.float32)
    init_random_(ref, seed=0, n_layer=24)
    ref_bf16 = models.MambaLMHeadModel(cfg, device="cuda", dtype=torch.bfloat16)  # A_log, D stay fp32 there
    ref_bf16.load_state_dict(ref.state_dict())
    ours = MambaLM(MambaConfig(d_model=768, n_layer=24, vocab_size=ref.backbone.embedding.weight.shape[0]))
    ours.load_checkpoint(ref.state_dict())
    ours_bf16 = MambaLM(ours.config)
    ours_bf16.load_checkpoint(ref.state_dict())
    return ref.eval(), ours.cuda().eval(), ref_bf16.eval(), ours_bf16.cuda().cast_(torch.bfloat16).eval()


@pytest.mark.parametrize("T", IDS_T)
def test_logits_match_mamba_ssm_kernels(mamba_ssm_models, T):
    ref, ours, _, _ = mamba_ssm_models
    assert cuda.available(), cuda.reason()
    with torch.no_grad():
        diff = (ours(_ids(T)) - ref(_ids(T)).logits).abs().max().item()
    assert diff <= 1e-4, f"max |Δlogit| = {diff:.2e} at T={T}"


@pytest.mark.parametrize("T", IDS_T)
def test_pure_pytorch_path_matches_mamba_ssm_kernels(mamba_ssm_models, T):
    """Without the kernels (as on a GPU without the [cuda] extra): `selective_scan_parallel`."""
    ref, ours, _, _ = mamba_ssm_models
    with torch.no_grad(), cuda.disabled():
        diff = (ours(_ids(T)) - ref(_ids(T)).logits).abs().max().item()
    assert diff <= 1e-4, f"max |Δlogit| = {diff:.2e} at T={T}"


@pytest.mark.parametrize("T", IDS_T)
def test_bf16_logits_match_mamba_ssm_bf16(mamba_ssm_models, T):
    ref, _, ref_bf16, ours_bf16 = mamba_ssm_models
    with torch.no_grad():
        exact = ref(_ids(T)).logits.float()
        theirs = ref_bf16(_ids(T)).logits.float()
        mine = ours_bf16(_ids(T)).float()
    err_theirs, err_mine = (theirs - exact).abs().max().item(), (mine - exact).abs().max().item()
    assert err_mine <= 2 * err_theirs + 0.02 and err_theirs <= 2 * err_mine + 0.02, (err_mine, err_theirs)
    top1 = (mine.argmax(-1) == exact.argmax(-1)).float().mean().item()
    assert top1 >= 0.95, f"top-1 agreement with fp32 {top1:.3f}"


def test_plain_forward_takes_the_kernels_and_a_state_read_does_not(mamba_ssm_models, monkeypatch):
    """The CPU kernels' rule: the fused scan while no SSM point is requested."""
    import compare.ssm.mamba as mamba_module

    _, ours, _, _ = mamba_ssm_models
    fused, parallel = [], []
    real_fused, real_parallel = cuda.selective_scan, mamba_module.linear_scan
    monkeypatch.setattr(cuda, "selective_scan", lambda *a: fused.append(1) or real_fused(*a))
    monkeypatch.setattr(mamba_module, "linear_scan", lambda *a: parallel.append(1) or real_parallel(*a))
    with torch.no_grad():
        ours(_ids(14))
        assert len(fused) == 24 and parallel == []
        hook = ours.layers[3].mixer.hook_h.register_forward_hook(lambda *args: None)
        try:
            ours(_ids(14))
        finally:
            hook.remove()
    assert len(fused) == 24 + 23 and len(parallel) == 1


@pytest.fixture(scope="module")
def tiny_pair(tiny_dirs):
    """The tiny Mamba loaded on CPU and on CUDA (d_in = 64: the conv kernel's channel-last layout)."""
    from compare import load_model

    return load_model(tiny_dirs[0]["mamba"], device="cpu"), load_model(tiny_dirs[0]["mamba"], device="cuda")


@pytest.mark.parametrize("kernels", [True, False])
def test_state_read_and_edit_on_gpu_equal_cpu(tiny_pair, kernels):
    """h edited at layer 0 and read at layer 1 in a trace; the other layers take the kernels (or,
    with kernels=False, the pure PyTorch path)."""
    ids = torch.tensor([[2, 3, 4, 5, 6, 7, 8, 9, 10, 5, 11, 12, 13, 14]])
    noise = torch.randn(2, 64, 8, generator=torch.Generator().manual_seed(0)) * 0.5
    out = []
    for handle in tiny_pair:
        with contextlib.nullcontext() if kernels else cuda.disabled():
            with handle.nn.trace(ids):
                handle.point("h", 0)[0, [2, 6]] += noise.to(handle.device)
                h = handle.point("h", 1).save()
                logits = handle.point("logits").save()
            out.append((h.cpu(), logits.cpu(), handle.logits(ids).cpu()))
    (h_cpu, logits_cpu, plain_cpu), (h_gpu, logits_gpu, plain_gpu) = out
    torch.testing.assert_close(h_gpu, h_cpu, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits_gpu, logits_cpu, atol=1e-4, rtol=0)
    torch.testing.assert_close(plain_gpu, plain_cpu, atol=1e-4, rtol=0)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("b,l,chunk", [(1, 1, 16), (2, 33, 4), (1, 257, 16), (1, 2048, 16)])
def test_chunked_scan_on_gpu_matches_reference(b, l, chunk, dtype, tol):
    from conftest import ssm_inputs

    x, delta, A, B, C, D = (t.to(dtype) for t in ssm_inputs(b, l, 32, 4, seed=l))
    A_bar = torch.exp(delta[..., None] * A)
    write = (delta * x)[..., None] * B[:, :, None, :]
    got = linear_scan_parallel(A_bar.cuda(), write.cuda(), chunk=chunk).cpu()
    torch.testing.assert_close(got, linear_scan_ref(A_bar, write), atol=tol, rtol=tol)
    y = selective_scan_parallel(*(t.cuda() for t in (x, delta, A, B, C, D)), chunk=chunk).cpu()
    torch.testing.assert_close(y, selective_scan_ref(x, delta, A, B, C, D), atol=tol * 10, rtol=tol * 10)


@pytest.mark.parametrize("kernels", [True, False])
def test_gradients_through_a_state_read_on_gpu_equal_cpu(tiny_pair, kernels):
    """With grad on (a trace's default) and h read at layer 0, `scan.LinearScan`'s backward on the
    GPU (a reverse parallel scan) gives the CPU's gradients (a reverse loop)."""
    ids = torch.tensor([[2, 3, 4, 5, 6, 7, 8, 9, 10, 5, 11, 12, 13, 14]])
    grads = []
    for handle in tiny_pair:
        model = handle.module
        hook = model.layers[0].mixer.hook_h.register_forward_hook(lambda *args: None)
        try:
            with contextlib.nullcontext() if kernels else cuda.disabled():
                loss = model(ids.to(handle.device))[0, :, 5].sum()
        finally:
            hook.remove()
        params = (model.layers[0].mixer.A_log, model.layers[0].mixer.in_proj.weight, model.embeddings.weight)
        grads.append([g.cpu() for g in torch.autograd.grad(loss, params)])
    for g_gpu, g_cpu in zip(grads[1], grads[0]):
        torch.testing.assert_close(g_gpu, g_cpu, atol=1e-4, rtol=1e-4)
