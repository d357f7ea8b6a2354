"""Mamba-2's SSD scan (`compare.ssm.ssd`) against its sequential twin and against mamba_ssm's own
reference, `ssd_minimal.py` (Listing 1 of the SSD paper), loaded by path from mamba-ssm's
source distribution (a cache folder, else `pip download`; skipped with the reason when neither
works). Tolerance: fp32 rounding of sums over ≤ 70 positions, 2e-5 absolute on O(1) values."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from compare.ssm.ssd import ssd_attention, ssd_scan, ssd_scan_ref

TOL = dict(atol=2e-5, rtol=1e-5)
SDIST = "mamba-ssm==2.3.2.post1"
CACHE = Path(os.environ.get("COMPARE_TEST_CACHE", Path.home() / ".cache" / "compare-tests"))

# (batch, T, heads, headdim, groups, d_state, chunk): T off the chunk, T = 1, groups > 1, chunk > T
SHAPES = [
    (1, 1, 1, 1, 1, 1, 4), (1, 1, 4, 8, 2, 16, 64), (2, 1, 6, 4, 3, 8, 1),
    (1, 2, 2, 4, 1, 4, 1), (1, 7, 2, 4, 1, 4, 4), (2, 8, 2, 4, 1, 4, 4), (1, 9, 4, 4, 2, 4, 4),
    (1, 16, 4, 8, 4, 8, 16), (1, 17, 4, 8, 1, 8, 16), (2, 31, 8, 2, 2, 6, 8), (1, 32, 2, 16, 1, 32, 5),
    (1, 33, 6, 4, 3, 8, 32), (1, 40, 4, 4, 4, 4, 64), (3, 12, 2, 3, 2, 5, 3), (1, 64, 4, 8, 1, 16, 64),
    (1, 65, 4, 8, 2, 16, 64), (1, 70, 2, 8, 1, 8, 7), (2, 50, 12, 4, 4, 4, 16), (1, 23, 3, 5, 1, 7, 2),
    (1, 48, 8, 8, 8, 8, 12), (1, 5, 2, 64, 1, 128, 4), (2, 19, 4, 2, 2, 3, 19),
]


def ssd_inputs(b, l, heads, p, g, n, seed=0, dtype=torch.float32):
    """x, Δ, A, B, C, D as a Mamba-2 layer produces them: Δ > 0, A < 0, one A and D per head."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, heads, p, generator=gen)
    dt = F.softplus(torch.randn(b, l, heads, generator=gen) - 1)
    A = -torch.rand(heads, generator=gen) * 4 - 0.1
    B, C = torch.randn(b, l, g, n, generator=gen), torch.randn(b, l, g, n, generator=gen)
    D = torch.randn(heads, generator=gen)
    return tuple(t.to(dtype) for t in (x, dt, A, B, C, D))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_chunked_scan_equals_the_sequential_ref(shape):
    *dims, chunk = shape
    x, dt, A, B, C, D = ssd_inputs(*dims)
    expected = ssd_scan_ref(*(t.double() for t in (x, dt, A, B, C, D)))
    torch.testing.assert_close(ssd_scan(x, dt, A, B, C, D, chunk=chunk).double(), expected, **TOL)


@pytest.mark.parametrize("shape", SHAPES[::3], ids=str)
def test_states_equal_the_refs_and_y_is_read_out_of_them(shape):
    *dims, chunk = shape
    x, dt, A, B, C, D = ssd_inputs(*dims, seed=1)
    y_ref, h_ref = ssd_scan_ref(*(t.double() for t in (x, dt, A, B, C, D)), return_states=True)
    y, h = ssd_scan(x, dt, A, B, C, D, chunk=chunk, return_states=True)
    assert h.shape == (*x.shape, B.shape[-1])
    torch.testing.assert_close(h.double(), h_ref, **TOL)
    torch.testing.assert_close(y.double(), y_ref, **TOL)


def test_chunk_size_changes_nothing_beyond_fp32_rounding():
    x, dt, A, B, C, D = ssd_inputs(2, 200, 4, 8, 2, 16, seed=2)
    ys = [ssd_scan(x, dt, A, B, C, D, chunk=q) for q in (1, 3, 16, 64, 128, 256)]
    for y in ys[1:]:
        torch.testing.assert_close(y, ys[0], **TOL)


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_an_initial_state_continues_the_scan(chunk):
    """Scanning the second half from the first half's last state equals scanning it all."""
    x, dt, A, B, C, D = ssd_inputs(2, 30, 4, 4, 2, 8, seed=3)
    whole = ssd_scan_ref(*(t.double() for t in (x, dt, A, B, C, D)))
    _, h = ssd_scan_ref(x[:, :13], dt[:, :13], A, B[:, :13], C[:, :13], D, return_states=True)
    rest = ssd_scan(x[:, 13:], dt[:, 13:], A, B[:, 13:], C[:, 13:], D, chunk=chunk, h0=h[:, -1])
    torch.testing.assert_close(rest.double(), whole[:, 13:], **TOL)


def test_hidden_attention_reconstructs_y():
    x, dt, A, B, C, D = ssd_inputs(2, 21, 6, 4, 3, 8, seed=4)
    alpha = ssd_attention(dt, A, B, C)
    assert torch.all(alpha.triu(1) == 0)  # causal
    y = torch.einsum("bhts,bshp->bthp", alpha, x) + D[:, None] * x
    torch.testing.assert_close(y.double(), ssd_scan_ref(*(t.double() for t in (x, dt, A, B, C, D))), **TOL)


# --- mamba_ssm's own reference -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ssd_minimal():
    """`ssd_minimal_discrete` from mamba-ssm's sdist, its triton import stubbed (never called)."""
    pytest.importorskip("einops", reason="ssd_minimal.py needs einops (the [test] extra)")
    source = _sdist_file("mamba_ssm/modules/ssd_minimal.py")
    stubs = {"mamba_ssm": types.ModuleType("mamba_ssm"), "mamba_ssm.ops": types.ModuleType("mamba_ssm.ops"),
             "mamba_ssm.ops.triton": types.ModuleType("mamba_ssm.ops.triton"),
             "mamba_ssm.ops.triton.ssd_combined": types.ModuleType("mamba_ssm.ops.triton.ssd_combined")}
    stubs["mamba_ssm.ops.triton.ssd_combined"].mamba_chunk_scan_combined = None
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update({k: v for k, v in stubs.items() if saved[k] is None})
    try:
        spec = importlib.util.spec_from_file_location("ssd_minimal_reference", source)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
    return module.ssd_minimal_discrete


def _sdist_file(member: str) -> Path:
    target = CACHE / "mamba_ssm" / member
    if target.is_file():
        return target
    tarballs = sorted(CACHE.glob("mamba_ssm-*.tar.gz"))
    if not tarballs:
        CACHE.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "MAMBA_SKIP_CUDA_BUILD": "TRUE"}  # metadata only: nothing is compiled
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                               "--no-build-isolation", SDIST, "-d", str(CACHE)],
                              capture_output=True, text=True, env=env, timeout=600)
        tarballs = sorted(CACHE.glob("mamba_ssm-*.tar.gz"))
        if not tarballs:
            pytest.skip(f"mamba-ssm's source distribution is not in {CACHE} and pip could not download it: "
                        f"{done.stderr.strip().splitlines()[-1:] or done.returncode}")
    with tarfile.open(tarballs[-1]) as tar:
        found = next((m for m in tar.getmembers() if m.name.endswith("/" + member)), None)
        if found is None:
            pytest.skip(f"{tarballs[-1].name} has no {member}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(tar.extractfile(found).read())
    return target


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_scan_equals_mamba_ssms_ssd_minimal(ssd_minimal, shape):
    """ssd_minimal takes Δ·x and Δ·A, B and C per head, and T a multiple of its block: T itself
    (one block, the whole quadratic form) where our chunk does not divide T. It has no D."""
    b, l, heads, p, g, n, chunk = shape
    x, dt, A, B, C, D = ssd_inputs(b, l, heads, p, g, n, seed=5)
    h0 = torch.randn(b, heads, p, n, generator=torch.Generator().manual_seed(6))
    r = heads // g
    block = chunk if l % chunk == 0 else l
    expected, final = ssd_minimal(x * dt.unsqueeze(-1), A * dt, B.repeat_interleave(r, 2),
                                  C.repeat_interleave(r, 2), block, initial_states=h0[:, None])
    y, h = ssd_scan(x, dt, A, B, C, None, chunk=chunk, h0=h0, return_states=True)
    torch.testing.assert_close(ssd_scan(x, dt, A, B, C, None, chunk=chunk, h0=h0), expected, **TOL)
    torch.testing.assert_close(y, expected, **TOL)
    torch.testing.assert_close(h[:, -1], final, **TOL)
