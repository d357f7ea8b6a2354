"""The fast scans agree with their sequential fp32 references, and the references with hand maths."""
import pytest
import torch

from compare import native
from compare.scan import (discretise, linear_scan, linear_scan_ref, read_out, selective_scan,
                          selective_scan_chunked, selective_scan_ref, write_of)
from conftest import ssm_inputs

TOL = dict(atol=1e-5, rtol=1e-5)  # fp32, sums over n <= 16 terms


def test_hand_computed_scalar_recurrence():
    A_bar = torch.full((1, 3, 1, 1), 0.5)
    write = torch.ones(1, 3, 1, 1)
    expected = torch.tensor([1.0, 1.5, 1.75]).view(1, 3, 1, 1)
    torch.testing.assert_close(linear_scan_ref(A_bar, write), expected)
    torch.testing.assert_close(linear_scan(A_bar, write), expected)


@pytest.mark.parametrize("b,l", [(1, 1), (1, 7), (2, 33), (3, 70)])
def test_linear_scan_matches_reference(b, l):
    x, delta, A, B, C, D = ssm_inputs(b, l, 8, 4)
    A_bar, B_bar = discretise(delta, A, B)
    write = write_of(B_bar, x)
    torch.testing.assert_close(linear_scan(A_bar, write), linear_scan_ref(A_bar, write), **TOL)


@pytest.mark.parametrize("chunk", [1, 4, 32])
@pytest.mark.parametrize("b,l", [(1, 1), (1, 5), (2, 33), (3, 70)])
def test_chunked_scan_matches_reference(b, l, chunk):
    args = ssm_inputs(b, l, 8, 4, seed=l)
    torch.testing.assert_close(selective_scan_chunked(*args, chunk=chunk), selective_scan_ref(*args), **TOL)


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("b,l,d,n", [(1, 14, 8, 4), (2, 33, 8, 4)])
def test_selective_scan_matches_reference(b, l, d, n, gated):
    *args, z = ssm_inputs(b, l, d, n, seed=l, gate=True)
    z = z if gated else None
    torch.testing.assert_close(selective_scan(*args, z=z), selective_scan_ref(*args, z=z), **TOL)


def test_gate_is_y_times_silu_of_z():
    x, delta, A, B, C, D = ssm_inputs(1, 3, 2, 2)
    z = torch.tensor([[[0.0, 1.0], [-2.0, 3.0], [0.5, -0.5]]])
    y = selective_scan_ref(x, delta, A, B, C, D)
    torch.testing.assert_close(selective_scan_ref(x, delta, A, B, C, D, z=z), y * z / (1 + torch.exp(-z)))


def test_without_the_c_kernels_the_pytorch_scan_gives_the_same(monkeypatch):
    args = ssm_inputs(2, 6, 5, 3)
    monkeypatch.setattr(native, "available", lambda: False)
    torch.testing.assert_close(selective_scan(*args), selective_scan_ref(*args), **TOL)




def test_materialised_path_matches_reference():
    x, delta, A, B, C, D = ssm_inputs(2, 20, 6, 3)
    A_bar, B_bar = discretise(delta, A, B)
    write = write_of(B_bar, x)
    y = read_out(linear_scan(A_bar, write), C, D, x)
    torch.testing.assert_close(y, selective_scan_ref(x, delta, A, B, C, D), **TOL)


def test_discretisation_is_zoh_for_A_and_euler_for_B():
    x, delta, A, B, C, D = ssm_inputs(1, 2, 3, 2)
    A_bar, B_bar = discretise(delta, A, B)
    write = write_of(B_bar, x)
    t, i, j = 1, 2, 1
    assert A_bar[0, t, i, j].item() == pytest.approx(torch.exp(delta[0, t, i] * A[i, j]).item(), rel=1e-6)
    assert B_bar[0, t, i, j].item() == pytest.approx((delta[0, t, i] * B[0, t, j]).item(), rel=1e-6)
    assert write[0, t, i, j].item() == pytest.approx((delta[0, t, i] * B[0, t, j] * x[0, t, i]).item(), rel=1e-6)


def test_selective_scan_supports_autograd():
    args = [t.requires_grad_() for t in ssm_inputs(1, 9, 4, 3)]
    grads = torch.autograd.grad(selective_scan(*args).square().sum(), args)
    grads_ref = torch.autograd.grad(selective_scan_ref(*args).square().sum(), args)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, atol=1e-4, rtol=1e-4)
