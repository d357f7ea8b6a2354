"""The fast scans agree with their sequential fp32 references, and the references with hand maths."""
import pytest
import torch

from compare.ssm import native
from compare.ssm.scan import (LinearScan, discretise, linear_scan, linear_scan_parallel, linear_scan_ref, read_out,
    selective_scan, selective_scan_chunked, selective_scan_parallel, selective_scan_ref, state_after, write_of)
from conftest import ssm_inputs

TOL = dict(atol=1e-5, rtol=1e-5)  # fp32, sums over n <= 16 terms
IDS = torch.tensor([[2, 3, 4, 5, 6, 7, 8, 9, 10, 5, 11, 12, 13, 14]])  # the IOI sentence in the tiny vocab
TOL64 = dict(atol=1e-12, rtol=1e-12)  # fp64: the parallel scan sums in another order, ~log2(l) more roundings


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


def _inputs(b, l, d, n, dtype, seed=0):
    return tuple(t.to(dtype) for t in ssm_inputs(b, l, d, n, seed=seed))


# T = 1, odd T, T not a multiple of the chunk, several levels of recursion (257 = 16² + 1); chunk
# sizes a power of two and not
@pytest.mark.parametrize("dtype,tol", [(torch.float32, TOL), (torch.float64, TOL64)])
@pytest.mark.parametrize("chunk", [2, 5, 16])
@pytest.mark.parametrize("b,l", [(1, 1), (1, 5), (2, 33), (3, 70), (1, 257)])
def test_parallel_linear_scan_matches_the_loop(b, l, chunk, dtype, tol):
    x, delta, A, B, C, D = _inputs(b, l, 6, 3, dtype, seed=l)
    A_bar, B_bar = discretise(delta, A, B)
    write = write_of(B_bar, x)
    torch.testing.assert_close(linear_scan_parallel(A_bar, write, chunk=chunk), linear_scan_ref(A_bar, write), **tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, TOL), (torch.float64, TOL64)])
@pytest.mark.parametrize("block", [None, 1, 7])
@pytest.mark.parametrize("b,l", [(1, 1), (2, 15), (1, 70)])
def test_parallel_selective_scan_matches_reference(b, l, block, dtype, tol):
    args = _inputs(b, l, 8, 4, dtype, seed=l)
    torch.testing.assert_close(selective_scan_parallel(*args, block=block, chunk=4), selective_scan_ref(*args), **tol)


def test_parallel_scan_is_exact_through_state_resets():
    """Ā = 0 (Δ·A = -inf) and Ā underflowing (Δ·A = -200) inside a chunk reset the state, as in the
    loop: no quotient or logarithm of Ā that would turn them into inf or NaN."""
    x, delta, A, B, C, D = ssm_inputs(1, 40, 6, 3, seed=5)
    A_bar, B_bar = discretise(delta, A, B)
    A_bar[0, 9] = 0.0
    A_bar[0, 21, :3] = torch.exp(torch.tensor(-200.0))  # 0 in fp32
    A_bar[0, 30] = 1e-30
    write = write_of(B_bar, x)
    h = linear_scan_parallel(A_bar, write, chunk=16)
    assert torch.isfinite(h).all()
    torch.testing.assert_close(h, linear_scan_ref(A_bar, write), **TOL)
    torch.testing.assert_close(h[0, 9], write[0, 9])  # the reset forgets everything before position 9


def test_parallel_scan_starts_from_a_given_state():
    x, delta, A, B, C, D = ssm_inputs(2, 11, 5, 3, seed=2)
    A_bar, B_bar = discretise(delta, A, B)
    write = write_of(B_bar, x)
    h0 = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    # the same as a scan with one position before, whose state is h0
    expected = linear_scan_ref(torch.cat([torch.ones_like(A_bar[:, :1]), A_bar], 1),
                               torch.cat([h0[:, None], write], 1))[:, 1:]
    torch.testing.assert_close(linear_scan_parallel(A_bar, write, h0=h0, chunk=4), expected, **TOL)


def test_parallel_scan_of_an_increment_is_its_effect_inside_the_recurrence():
    """h edits are scanned on their own and added (`MambaMixer._ssm_materialised`): exact because
    the scan is linear in w; fp64 so that rounding does not hide a wrong term."""
    x, delta, A, B, C, D = _inputs(1, 37, 6, 3, torch.float64, seed=4)
    A_bar, B_bar = discretise(delta, A, B)
    write = write_of(B_bar, x)
    increment = torch.zeros_like(write)
    increment[0, [3, 20]] = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    together = linear_scan_ref(A_bar, write + increment)
    apart = linear_scan_parallel(A_bar, write, chunk=8) + linear_scan_parallel(A_bar, increment, chunk=8)
    torch.testing.assert_close(apart, together, **TOL64)


def test_model_with_the_parallel_scan_gives_the_same_state_edits(tiny, monkeypatch):
    """The GPU's path (`linear_scan_parallel` for the materialised state), run on CPU: h read and
    edited in a trace gives the logits and the h of the CPU's loop."""
    import compare.ssm.mamba as mamba_module

    handle = tiny[0]["mamba"]
    noise = torch.randn(2, 64, 8, generator=torch.Generator().manual_seed(0)) * 0.5

    def run():
        with handle.nn.trace(IDS):
            h = handle.point("h", 0)
            h[0, [2, 6]] += noise
            read = handle.point("h", 1).save()
            logits = handle.point("logits").save()
        return read, logits

    loop_h, loop_logits = run()
    monkeypatch.setattr(mamba_module, "linear_scan", lambda A_bar, w, h0=None: linear_scan_parallel(A_bar, w, h0, chunk=4))
    assert torch.is_grad_enabled() and handle.module.layers[0].mixer.A_log.requires_grad  # as in a trace on a GPU
    parallel_h, parallel_logits = run()
    torch.testing.assert_close(parallel_h, loop_h, **TOL)
    torch.testing.assert_close(parallel_logits, loop_logits, atol=1e-5, rtol=0)


def test_model_with_the_parallel_selective_scan_gives_the_same_logits(tiny, monkeypatch):
    """The pure-PyTorch GPU path without mamba_ssm (`selective_scan_parallel`), run on CPU."""
    import compare.ssm.scan as scan_module

    handle = tiny[0]["mamba"]
    expected = handle.logits(IDS)
    monkeypatch.setattr(native, "available", lambda: False)
    monkeypatch.setattr(scan_module, "selective_scan_chunked",
                        lambda *args, **kwargs: selective_scan_parallel(*args, block=5, chunk=4, **kwargs))
    torch.testing.assert_close(handle.logits(IDS), expected, atol=1e-5, rtol=0)


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


def test_parallel_scan_supports_autograd():
    """In a trace the weights require grad, so the GPU's materialised scan runs under autograd."""
    x, delta, A, B, C, D = ssm_inputs(2, 21, 4, 3, seed=3)
    A_bar, B_bar = discretise(delta, A, B)
    A_bar, write, h0 = A_bar.requires_grad_(), write_of(B_bar, x).requires_grad_(), torch.randn(2, 4, 3).requires_grad_()
    C_t = torch.randn(2, 21, 4, 3, generator=torch.Generator().manual_seed(0))
    got = torch.autograd.grad((linear_scan_parallel(A_bar, write, h0=h0, chunk=4) * C_t).sum(), (A_bar, write, h0))
    ref = linear_scan_ref(torch.cat([torch.ones_like(A_bar[:, :1]), A_bar], 1), torch.cat([h0[:, None], write], 1))
    expected = torch.autograd.grad((ref[:, 1:] * C_t).sum(), (A_bar, write, h0))
    for g, g_ref in zip(got, expected):
        torch.testing.assert_close(g, g_ref, atol=1e-4, rtol=1e-4)


def test_selective_scan_supports_autograd():
    args = [t.requires_grad_() for t in ssm_inputs(1, 9, 4, 3)]
    grads = torch.autograd.grad(selective_scan(*args).square().sum(), args)
    grads_ref = torch.autograd.grad(selective_scan_ref(*args).square().sum(), args)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, atol=1e-4, rtol=1e-4)


SCANS = {"loop": lambda A_bar, w, h0=None: linear_scan(A_bar, w, h0),
         "parallel": lambda A_bar, w, h0=None: linear_scan_parallel(A_bar, w, h0, chunk=4)}


def _scan_inputs64(b, l, d=3, n=2, a_batch=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    A_bar = torch.rand(a_batch or b, l, d, n, generator=g, dtype=torch.float64) * 0.6 + 0.3
    write = torch.randn(b, l, d, n, generator=g, dtype=torch.float64)
    h0 = torch.randn(b, d, n, generator=g, dtype=torch.float64)
    return A_bar, write, h0


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("a_batch", [None, 1])  # one Ā for a batch of writes, as patching scans its edits
def test_scan_gradients_equal_finite_differences(scan, a_batch):
    """`LinearScan.backward` (a reverse scan) against torch's finite differences, first and second
    derivatives, with a starting state; T = 11 crosses the parallel scan's chunks of 4."""
    A_bar, write, h0 = (t.requires_grad_() for t in _scan_inputs64(2, 11, a_batch=a_batch))
    fn = SCANS[scan]
    assert torch.autograd.gradcheck(fn, (A_bar, write, h0))
    assert torch.autograd.gradgradcheck(fn, (A_bar, write, h0))


@pytest.mark.parametrize("scan", SCANS)
def test_scan_keeps_only_A_bar_and_the_states_for_backward(scan):
    """Under autograd (a trace that reads h: the weights require grad) the scan keeps Ā, h0 and h
    and nothing per step or per doubling round; before `LinearScan` the parallel scan kept ~10× h."""
    A_bar, write, h0 = (t.requires_grad_() for t in _scan_inputs64(1, 64, d=8, n=4))
    kept = {}

    def pack(t):
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        h = SCANS[scan](A_bar, write, h0)
    assert sum(kept.values()) == A_bar.nbytes + h0.nbytes + h.nbytes


def test_parallel_scan_takes_one_A_bar_for_a_batch_of_writes():
    A_bar, write, h0 = _scan_inputs64(3, 19, a_batch=1, seed=4)
    expected = linear_scan_ref(A_bar.expand_as(write), write)
    torch.testing.assert_close(linear_scan_parallel(A_bar, write, chunk=4), expected, **TOL64)
    torch.testing.assert_close(linear_scan(A_bar, write), expected, **TOL64)


def test_linear_scan_starts_from_a_given_state():
    A_bar, write, h0 = _scan_inputs64(2, 9, seed=6)
    expected = linear_scan_ref(torch.cat([torch.ones_like(A_bar[:, :1]), A_bar], 1),
                               torch.cat([h0[:, None], write], 1))[:, 1:]
    torch.testing.assert_close(linear_scan(A_bar, write, h0), expected, **TOL64)


def _split(args, p):
    """The inputs at positions p.. and the state positions ..p-1 leave (`state_after`)."""
    x, delta, A, B, C, D = args
    return (x[:, p:], delta[:, p:], A, B[:, p:], C[:, p:], D), state_after(x[:, :p], delta[:, :p], A, B[:, :p])


@pytest.mark.parametrize("p", [1, 5, 32])
def test_state_after_is_the_references_last_state(p):
    x, delta, A, B, C, D = ssm_inputs(2, 33, 8, 4, seed=p)
    A_bar, B_bar = discretise(delta, A, B)
    expected = linear_scan_ref(A_bar, write_of(B_bar, x))[:, p - 1]
    torch.testing.assert_close(state_after(x[:, :p], delta[:, :p], A, B[:, :p], chunk=4), expected, **TOL)


@pytest.mark.parametrize("path", ["dispatch", "no_kernels", "chunked", "parallel", "grad", "ref"])
@pytest.mark.parametrize("shared", [False, True])
def test_scans_from_an_incoming_state_continue_the_whole_sequence(path, shared, monkeypatch):
    """y at positions p.. from h0 = the state p-1 leaves equals the whole sequence's reference y
    there; shared: one h0 row for every batch row (patching's rows share the corrupt prefix)."""
    *args, z = ssm_inputs(1 if shared else 3, 21, 8, 4, seed=7, gate=True)
    if shared:
        args = [t.expand(3, -1, -1) if t.dim() == 3 else t for t in args]
        z = z.expand(3, -1, -1)
    p = 9
    expected = selective_scan_ref(*args, z=z)[:, p:]
    suffix, h0 = _split(args, p)
    h0 = h0[:1] if shared else h0
    if path == "no_kernels":
        monkeypatch.setattr(native, "available", lambda: False)
    if path == "grad":
        suffix = (suffix[0].clone().requires_grad_(),) + suffix[1:]
    scan = {"chunked": lambda *a, z, h0: selective_scan_chunked(*a, chunk=4, h0=h0) * torch.nn.functional.silu(z),
            "parallel": lambda *a, z, h0: selective_scan_parallel(*a, block=5, chunk=4, h0=h0) * torch.nn.functional.silu(z),
            "ref": selective_scan_ref}.get(path, selective_scan)
    torch.testing.assert_close(scan(*suffix, z=z[:, p:], h0=h0), expected, **TOL)
