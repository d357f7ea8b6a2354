"""The one recorder of a pass (`engine.record.record_pass`), each reading against nnsight's trace
of the same forward, and transformers' own logits."""
from __future__ import annotations

import pytest
import torch

from compare.engine.record import record_pass

IDS = torch.tensor([[2, 3, 4, 5, 6, 7, 8, 9]])
EXACT = dict(atol=1e-5, rtol=1e-5)  # a trace may take another scan path than the plain forward (fp32 rounding)


@pytest.mark.parametrize("family", ["mamba", "gpt2", "granite_hybrid"])
def test_points_entries_and_logits_are_the_traced_forwards(tiny, family):
    handle, reference = tiny[0][family], tiny[1][family]
    layer = handle.n_layers - 1
    got = record_pass(handle, IDS, [("resid_pre", layer), ("resid_post", 0), ("embed", None)], entries=[0, layer])
    with handle.nn.trace(IDS):  # in the order the forward reaches them
        embed = handle.point("embed").save()
        resid_post = handle.point("resid_post", 0).save()
        resid_pre = handle.point("resid_pre", layer).save()
    torch.testing.assert_close(got.points["resid_pre", layer], resid_pre, **EXACT)
    torch.testing.assert_close(got.at(0), {"resid_post": resid_post}, **EXACT)
    torch.testing.assert_close(got.points["embed", None], embed, **EXACT)
    torch.testing.assert_close(got.entries[layer][0][0], resid_pre, **EXACT)  # what block `layer` was passed
    with torch.no_grad():
        expected = reference(IDS).logits[:, -1, :handle.vocab_size]
    torch.testing.assert_close(got.logits[:, :handle.vocab_size], expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ["mamba", "gpt2", "granite_hybrid"])
def test_logits_at_keeps_the_logits_of_those_positions(tiny, family):
    """A list of positions [b, P, V], slice(None) every position [b, T, V]: transformers' logits there."""
    handle, reference = tiny[0][family], tiny[1][family]
    with torch.no_grad():
        expected = reference(IDS).logits[..., :handle.vocab_size]
    some = record_pass(handle, IDS, logits_at=[1, 4, 7]).logits
    every = record_pass(handle, IDS, logits_at=slice(None)).logits
    torch.testing.assert_close(some, expected[:, [1, 4, 7]], atol=1e-4, rtol=0)
    torch.testing.assert_close(every, expected, atol=1e-4, rtol=0)


def test_an_edit_is_made_before_the_recording_and_no_hook_outlives_the_call(tiny):
    handle = tiny[0]["mamba"]
    before = {id(m): (dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in handle.module.modules()}

    def shift(value):
        value[:, 2] += 1.0

    got = record_pass(handle, IDS, [("embed", None), ("resid_pre", 0)], edits=[("embed", None, shift)])
    with handle.nn.trace(IDS):
        handle.point("embed")[:, 2] += 1.0
        embed = handle.point("embed").save()
        logits = handle.point("logits").save()
    torch.testing.assert_close(got.points["embed", None], embed, **EXACT)
    torch.testing.assert_close(got.points["resid_pre", 0], embed, **EXACT)
    torch.testing.assert_close(got.logits, logits[:, -1, :handle.vocab_size], **EXACT)
    after = {id(m): (dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in handle.module.modules()}
    assert after == before


def test_keep_says_what_is_kept(tiny):
    handle = tiny[0]["mamba"]
    got = record_pass(handle, IDS, [("resid_post", 1)], keep=lambda name, layer, value: value[:, -1].clone())
    assert got.points["resid_post", 1].shape == (1, handle.module.config.d_model)


@pytest.mark.parametrize("family", ["mamba", "pythia", "granite_hybrid"])
def test_a_stopped_forward_keeps_the_entry_it_stopped_at_and_computes_no_logits(tiny, family):
    """Stopped at block 1 the entry is the traced resid_pre of layer 1 and no later point is
    reached; stopped at the number of layers it is the last block's output, from which the
    model's head gives the plain forward's logits."""
    handle = tiny[0][family]
    L = handle.n_layers
    at_one = record_pass(handle, IDS, [("resid_post", 0), ("resid_post", L - 1)], stop=1)
    at_head = record_pass(handle, IDS, [("resid_post", L - 1)], stop=L)
    with handle.nn.trace(IDS):
        resid_pre = handle.point("resid_pre", 1).save()
        resid_post = handle.point("resid_post", L - 1).save()
    assert at_one.logits is None and at_head.logits is None
    assert list(at_one.points) == [("resid_post", 0)]
    torch.testing.assert_close(at_one.entries[1][0][0], resid_pre, **EXACT)
    final = at_head.entries[L][0][0]
    torch.testing.assert_close(final, resid_post, **EXACT)
    with torch.no_grad():
        logits = handle.arch.head(handle.module, final[:, -1])[:, :handle.vocab_size].float()
    torch.testing.assert_close(logits, handle.logits(IDS)[:, -1], **EXACT)
