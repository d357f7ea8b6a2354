"""The fused C kernels agree with the PyTorch twins and float64 maths, on any thread count.

Needs a C compiler; without one the kernels cannot exist and these tests skip (the model then
runs on PyTorch alone, which the rest of the suite covers).
"""
import math

import pytest
import torch
import torch.nn.functional as F

from compare.ssm import native
from compare.ssm.mamba import causal_conv
from compare.ssm.scan import LOG2_E, selective_scan_ref
from conftest import ssm_inputs

TOL = dict(atol=1e-5, rtol=1e-5)  # fp32, sums over n <= 16 terms
ULP = 2.0 ** -23  # relative spacing of fp32 numbers in [1, 2)


@pytest.fixture(autouse=True)
def kernels():
    if not native._compilers():
        pytest.skip("no C compiler on this machine (cc, gcc, clang or $CC): the C kernels cannot be built")
    assert native.available(), "a C compiler is present but the C kernels did not build"


def _scan(x, delta, A, B, C, D, z=None):
    return native.selective_scan(x, delta, (A * LOG2_E).t(), B, C, D, z)


# odd d (no multiple of any vector width), b not a multiple of the thread count, T = 1
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("b,l,d,n", [(1, 1, 1, 1), (1, 14, 8, 4), (3, 33, 37, 5), (5, 9, 1536, 16)])
def test_scan_matches_reference(b, l, d, n, gated):
    *args, z = ssm_inputs(b, l, d, n, seed=d, gate=True)
    z = z if gated else None
    torch.testing.assert_close(_scan(*args, z), selective_scan_ref(*args, z=z), **TOL)


@pytest.mark.parametrize("b,l", [(2, 7), (3, 1), (1, 5)])
def test_kernels_read_column_slices_in_place(b, l):
    """x and z arrive as the halves of in_proj's output, B and C as slices of x_proj's: the
    kernels read them through their row stride (and copy anything not laid out so)."""
    x, delta, A, _, _, D = ssm_inputs(b, l, 6, 3)
    xz = torch.randn(b, l, 12)
    dBC = torch.randn(b, l, 2 + 2 * 3)
    B, C, z = dBC[..., 2:5], dBC[..., 5:], xz[..., 6:]
    torch.testing.assert_close(_scan(x, delta, A, B, C, D, z), selective_scan_ref(x, delta, A, B, C, D, z=z), **TOL)
    w, bias = torch.randn(6, 1, 4), torch.randn(6)
    torch.testing.assert_close(native.causal_conv1d_silu(xz[..., :6], w, bias),
                               F.silu(causal_conv(xz[..., :6].contiguous(), w, bias)), **TOL)
    transposed = x.transpose(0, 1).contiguous().transpose(0, 1)  # rows not evenly spaced: copied
    torch.testing.assert_close(native.causal_conv1d_silu(transposed, w, bias), F.silu(causal_conv(x, w, bias)), **TOL)


@pytest.mark.parametrize("b,l", [(2, 7), (1, 1)])
def test_bf16_inputs_are_widened_exactly(b, l):
    """Under a bf16 model the conv's x and the scan's gate z arrive in bf16 (column slices of
    in_proj's output): the kernels must give exactly what they give for the same values in fp32."""
    x, delta, A, B, C, D = ssm_inputs(b, l, 16, 3, seed=l)
    xz = torch.randn(b, l, 32, generator=torch.Generator().manual_seed(1)).bfloat16()
    w, bias = torch.randn(16, 1, 4), torch.randn(16)
    assert torch.equal(native.causal_conv1d_silu(xz[..., :16], w, bias),
                       native.causal_conv1d_silu(xz[..., :16].float(), w, bias))
    z = xz[..., 16:]
    assert torch.equal(_scan(x, delta, A, B, C, D, z), _scan(x, delta, A, B, C, D, z.float()))
    assert native.usable(x, bf16=(z,)) and not native.usable(x, z)


def test_results_do_not_depend_on_the_thread_count():
    *args, z = ssm_inputs(7, 12, 40, 6, gate=True)
    x = args[0]
    w, bias = torch.randn(40, 1, 4), torch.randn(40)
    threads = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            outs.append((_scan(*args, z), native.causal_conv1d_silu(x, w, bias), native.elementwise("softplus", x)))
    finally:
        torch.set_num_threads(threads)
    for one, three in zip(*outs):
        assert torch.equal(one, three)  # each element is computed by one thread, in one order


def test_decay_is_exp2_of_delta_A2_to_an_ulp():
    """With h_0 = 1 and nothing written after it, y_1 = Ā_1 = 2^(Δ_1·A2): read off for Δ·A from
    -87 to 0 (Ā down to the smallest normal float), and at -inf, where Ā must be exactly 0. The
    reference is 2^a in float64 of the very fp32 a = Δ·(A·log₂e) the kernel sees: rounding Δ·A to
    fp32 is every fp32 scan's error (mamba_ssm's too), not the kernel's."""
    dA = torch.cat([torch.linspace(-87, 0, 4001), torch.tensor([-math.inf])])
    d = dA.numel()
    A = dA.unsqueeze(1).clone()
    B = torch.tensor([[[1.0], [0.0]]])
    y = _scan(torch.ones(1, 2, d), torch.ones(1, 2, d), A, B, torch.ones(1, 2, 1), torch.zeros(d))[0, 1]
    expected = torch.exp2((A[:, 0] * LOG2_E).double())
    assert y[-1].item() == 0.0
    rel = ((y[:-1].double() - expected[:-1]) / expected[:-1]).abs().max().item()
    assert rel < ULP, f"max relative error of Ā = {rel:.1e}"  # measured 7.9e-8


@pytest.mark.parametrize("op,ref,lo,hi,bound", [
    ("exp2", torch.exp2, -126.0, 127.0, ULP),        # measured 7.6e-8 (torch's fp32: 7.0e-8)
    ("exp", torch.exp, -87.0, 88.0, ULP),            # 8.2e-8 (6.1e-8)
    ("softplus", F.softplus, -87.0, 40.0, 2 * ULP),  # 2.2e-7 (1.2e-7)
    ("silu", F.silu, -80.0, 80.0, 2 * ULP),          # 1.6e-7 (1.6e-7)
])
def test_elementwise_maths_matches_float64(op, ref, lo, hi, bound):
    x = torch.cat([torch.linspace(lo, hi, 200_001), torch.linspace(-1, 1, 20_001)])
    y = native.elementwise(op, x).double()
    expected = ref(x.double())
    rel = ((y - expected) / expected.abs().clamp_min(1e-30)).abs().max().item()
    assert rel < bound, f"{op}: max relative error {rel:.2e}"


@pytest.mark.parametrize("op,ref", [("exp2", torch.exp2), ("exp", torch.exp), ("softplus", F.softplus),
                                    ("silu", F.silu)])
def test_elementwise_special_values_as_torch(op, ref):
    """Infinities, underflow, overflow and NaN give what torch's own fp32 functions give."""
    x = torch.tensor([-math.inf, math.inf, math.nan, -200.0, 200.0, 0.0, -0.0])
    torch.testing.assert_close(native.elementwise(op, x), ref(x), equal_nan=True, atol=0, rtol=1e-7)


def test_scan_propagates_nan_forward_in_time_only():
    x, delta, A, B, C, D = ssm_inputs(1, 4, 3, 2)
    delta[0, 2, 1] = math.nan
    y = _scan(x, delta, A, B, C, D)
    assert torch.isnan(y[0, 2:, 1]).all() and not torch.isnan(y[0, :2]).any() and not torch.isnan(y[0, :, 0]).any()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("l", [1, 2, 9])
def test_conv_silu_matches_torch_conv1d(bias, l):
    g = torch.Generator().manual_seed(l)
    conv = torch.nn.Conv1d(6, 6, 4, groups=6, padding=3, bias=bias)
    x = torch.randn(3, l, 6, generator=g)
    with torch.no_grad():
        expected = F.silu(conv(x.transpose(1, 2))[..., :l].transpose(1, 2))
        torch.testing.assert_close(native.causal_conv1d_silu(x, conv.weight, conv.bias), expected, **TOL)
        torch.testing.assert_close(F.silu(causal_conv(x, conv.weight, conv.bias)), expected, **TOL)


def test_without_a_compiler_there_is_a_warning_and_no_kernels(monkeypatch):
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    native._library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="could not compile the C kernels"):
            assert not native.available()
        assert not native.usable(torch.ones(2))
    finally:
        monkeypatch.delenv("CC")
        native._library.cache_clear()


def test_model_gives_the_same_logits_without_the_kernels(tiny, monkeypatch):
    handle = tiny[0]["mamba"]
    ids = torch.tensor([[2, 3, 4, 5, 6, 7, 8, 9, 10, 5, 11, 12, 13, 14]])
    with_kernels = handle.logits(ids)
    monkeypatch.setattr(native, "available", lambda: False)
    torch.testing.assert_close(handle.logits(ids), with_kernels, atol=1e-5, rtol=0)
