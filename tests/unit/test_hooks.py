"""HookPoint.requested: the SSM tensors are materialised only when something reads or edits them,
and a change in nnsight's private layout can slow traces down but never plain forwards."""
from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

import compare.base.hooks as hooks
import compare.ssm.mamba as mamba_module

IDS = torch.tensor([[2, 3, 4, 5, 6, 7]])


@pytest.fixture
def scans(monkeypatch):
    """Calls of the materialising path (the sequential scan over [b, l, d_in, n] states)."""
    calls = []
    real = mamba_module.linear_scan
    monkeypatch.setattr(mamba_module, "linear_scan", lambda *a: calls.append(1) or real(*a))
    return calls


def test_the_nnsight_details_requested_reads_exist_in_the_installed_version():
    # fails when nnsight moves STATE, State.active or the interleaver's parked/observers
    assert hooks.nnsight_layout_ok()


def test_a_plain_forward_materialises_no_ssm_tensor(tiny, scans):
    handle = tiny[0]["mamba"]
    with handle.nn.trace(IDS):  # leaves nnsight's per-module state behind on every module
        handle.point("y", 0).save()
    handle.logits(IDS)
    assert scans == []


def test_a_plain_forward_materialises_nothing_even_if_nnsights_layout_changed(tiny, scans, monkeypatch):
    monkeypatch.setattr(hooks, "_NNSIGHT_STATE", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and nothing warns outside a trace
        tiny[0]["mamba"].logits(IDS)
    assert scans == []


def test_a_trace_materialises_only_the_layer_it_reads(tiny, scans):
    handle = tiny[0]["mamba"]
    with handle.nn.trace(IDS):
        handle.point("h", 1).save()
    assert len(scans) == 1


def test_with_an_unknown_nnsight_layout_a_trace_warns_and_stays_correct(tiny, scans, monkeypatch):
    handle = tiny[0]["mamba"]
    with handle.nn.trace(IDS):
        expected = handle.point("h", 1).save()
    monkeypatch.setattr(hooks, "_NNSIGHT_STATE", None)
    scans.clear()
    with pytest.warns(RuntimeWarning, match="materialise every hook point"):
        with handle.nn.trace(IDS):
            h = handle.point("h", 1).save()
    assert len(scans) == handle.n_layers  # slow: every layer
    assert (h == expected).all()


def test_importing_compare_leaves_anyio_alone():
    # the anyio/nnsight fix belongs to the server (ui.app), not to every `import compare`
    code = "import sys, compare; print('ui.anyio_compat' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_temporary_hooks_remove_what_they_added_even_on_error():
    """`temporary_hooks`: hooks given or added inside are gone after the block, also when it raises."""
    from compare.base.hooks import temporary_hooks

    layer = torch.nn.Linear(2, 2)
    calls = []
    with temporary_hooks(layer.register_forward_hook(lambda *a: calls.append("given"))) as hooks:
        hooks.add(layer.register_forward_hook(lambda *a: calls.append("added")))
        hooks.extend([layer.register_forward_pre_hook(lambda *a: calls.append("pre"))])
        layer(torch.zeros(1, 2))
    assert sorted(calls) == ["added", "given", "pre"]
    assert not layer._forward_hooks and not layer._forward_pre_hooks
    try:
        with temporary_hooks() as hooks:
            hooks.add(layer.register_forward_hook(lambda *a: None))
            raise KeyError("inside")
    except KeyError:
        pass
    assert not layer._forward_hooks
