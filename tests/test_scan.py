"""The fast scans agree with their sequential fp32 references, and the references with hand maths."""
import pytest
import torch

from compare import scan_native
from compare.scan import (LOG2_E, discretise, linear_scan, linear_scan_ref, read_out, selective_scan,
                          selective_scan_chunked, selective_scan_ref, write_of)

TOL = dict(atol=1e-5, rtol=1e-5)  # fp32, sums over n <= 16 terms


def _inputs(b, l, d, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, d, generator=g)
    delta = torch.nn.functional.softplus(torch.randn(b, l, d, generator=g))
    A = -torch.rand(d, n, generator=g) * 4 - 0.1
    B, C = torch.randn(b, l, n, generator=g), torch.randn(b, l, n, generator=g)
    D = torch.randn(d, generator=g)
    return x, delta, A, B, C, D


def test_hand_computed_scalar_recurrence():
    A_bar = torch.full((1, 3, 1, 1), 0.5)
    write = torch.ones(1, 3, 1, 1)
    expected = torch.tensor([1.0, 1.5, 1.75]).view(1, 3, 1, 1)
    torch.testing.assert_close(linear_scan_ref(A_bar, write), expected)
    torch.testing.assert_close(linear_scan(A_bar, write), expected)


@pytest.mark.parametrize("b,l", [(1, 1), (1, 7), (2, 33), (3, 70)])
def test_linear_scan_matches_reference(b, l):
    x, delta, A, B, C, D = _inputs(b, l, 8, 4)
    A_bar, B_bar = discretise(delta, A, B)
    write = write_of(B_bar, x)
    torch.testing.assert_close(linear_scan(A_bar, write), linear_scan_ref(A_bar, write), **TOL)


@pytest.mark.parametrize("chunk", [1, 4, 32])
@pytest.mark.parametrize("b,l", [(1, 1), (1, 5), (2, 33), (3, 70)])
def test_chunked_scan_matches_reference(b, l, chunk):
    args = _inputs(b, l, 8, 4, seed=l)
    torch.testing.assert_close(selective_scan_chunked(*args, chunk=chunk), selective_scan_ref(*args), **TOL)


@pytest.mark.parametrize("b,l,d,n", [(1, 14, 8, 4), (2, 33, 8, 4)])
def test_selective_scan_matches_reference(b, l, d, n):
    args = _inputs(b, l, d, n, seed=l)
    torch.testing.assert_close(selective_scan(*args), selective_scan_ref(*args), **TOL)


@pytest.fixture
def native():
    if not scan_native._compilers():
        pytest.skip("no C compiler on this machine (cc, gcc, clang or $CC): the C scan cannot be built")
    assert scan_native.available(), "a C compiler is present but the C selective scan did not build"
    return scan_native.selective_scan


def _native_args(x, delta, A, B, C, D):
    return x, delta, (A * LOG2_E).t(), B, C, D


# odd d (not a multiple of any vector width) and b not a multiple of the thread count
@pytest.mark.parametrize("b,l,d,n", [(1, 1, 1, 1), (1, 14, 8, 4), (3, 33, 37, 5), (5, 9, 1536, 16)])
def test_native_scan_matches_reference(native, b, l, d, n):
    args = _inputs(b, l, d, n, seed=d)
    torch.testing.assert_close(native(*_native_args(*args)), selective_scan_ref(*args), **TOL)


def test_native_scan_is_the_same_for_any_thread_count(native):
    args = _native_args(*_inputs(7, 12, 40, 6))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native(*args)
        torch.set_num_threads(3)
        three = native(*args)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, three)  # each run is computed by one thread in the same order


def test_native_decay_is_exp_of_delta_A_to_fp32_precision(native):
    """With h_0 = 1 and nothing written after it, y_1 = Ā_1 = exp(Δ_1 A): the kernel's exp2
    polynomial, read off for Δ·A from -87 to 0 (Ā down to the smallest normal float) and at -inf,
    where Ā must be exactly 0. The reference is 2^a in float64 of the very fp32 a = Δ·(A·log₂e)
    the kernel sees: rounding Δ·A to fp32 is every fp32 scan's error, not the polynomial's."""
    dA = torch.cat([torch.linspace(-87, 0, 4001), torch.tensor([-float("inf")])])
    d = dA.numel()
    x = torch.ones(1, 2, d)
    delta = torch.ones(1, 2, d)
    A = dA.unsqueeze(1).clone()
    B = torch.tensor([[[1.0], [0.0]]])
    C = torch.ones(1, 2, 1)
    y = native(*_native_args(x, delta, A, B, C, torch.zeros(d)))[0, 1]
    expected = torch.exp2((A[:, 0] * LOG2_E).double())
    assert y[-1].item() == 0.0
    rel = ((y[:-1].double() - expected[:-1]) / expected[:-1]).abs().max().item()
    assert rel < 1.2e-7, f"max relative error of Ā = {rel:.1e}"  # one fp32 ulp; measured 7.9e-8


def test_native_scan_propagates_nan(native):
    x, delta, A, B, C, D = _inputs(1, 4, 3, 2)
    delta[0, 2, 1] = float("nan")
    y = native(*_native_args(x, delta, A, B, C, D))
    assert torch.isnan(y[0, 2:, 1]).all() and not torch.isnan(y[0, :2]).any() and not torch.isnan(y[0, :, 0]).any()


def test_without_a_compiler_the_pytorch_scan_is_used_with_a_warning(monkeypatch):
    args = _inputs(2, 6, 5, 3)
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    scan_native._kernel.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="could not compile the C selective scan"):
            assert not scan_native.available()
        torch.testing.assert_close(selective_scan(*args), selective_scan_ref(*args), **TOL)
    finally:
        monkeypatch.delenv("CC")
        scan_native._kernel.cache_clear()


def test_materialised_path_matches_reference():
    x, delta, A, B, C, D = _inputs(2, 20, 6, 3)
    A_bar, B_bar = discretise(delta, A, B)
    write = write_of(B_bar, x)
    y = read_out(linear_scan(A_bar, write), C, D, x)
    torch.testing.assert_close(y, selective_scan_ref(x, delta, A, B, C, D), **TOL)


def test_discretisation_is_zoh_for_A_and_euler_for_B():
    x, delta, A, B, C, D = _inputs(1, 2, 3, 2)
    A_bar, B_bar = discretise(delta, A, B)
    write = write_of(B_bar, x)
    t, i, j = 1, 2, 1
    assert A_bar[0, t, i, j].item() == pytest.approx(torch.exp(delta[0, t, i] * A[i, j]).item(), rel=1e-6)
    assert B_bar[0, t, i, j].item() == pytest.approx((delta[0, t, i] * B[0, t, j]).item(), rel=1e-6)
    assert write[0, t, i, j].item() == pytest.approx((delta[0, t, i] * B[0, t, j] * x[0, t, i]).item(), rel=1e-6)


def test_selective_scan_supports_autograd():
    args = [t.requires_grad_() for t in _inputs(1, 9, 4, 3)]
    grads = torch.autograd.grad(selective_scan(*args).square().sum(), args)
    grads_ref = torch.autograd.grad(selective_scan_ref(*args).square().sum(), args)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, atol=1e-4, rtol=1e-4)
