"""logit_lens: the last layer is the model's own logits, an identity final norm leaves a plain
unembedding (computed by hand), the statistics match their definitions, bad input is refused."""
from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch

from compare import Model
from compare.analyses.lens import COLUMNS, logit_lens

PROMPT = "When Mary and John went to the store , John gave a drink to"
FAMILIES = ("mamba", "gpt2", "pythia")


def identity_norm(handle: Model) -> Model:
    """A copy of the handle whose final norm is the identity (the lens is then W_U · resid)."""
    module = copy.deepcopy(handle.module)
    owner, _, name = handle.arch.norm_path.rpartition(".")
    parent = module
    for part in filter(None, owner.split(".")):
        parent = getattr(parent, part)
    setattr(parent, name, torch.nn.Identity())
    return Model(f"{handle.name}-identity-norm", handle.family, module, handle.tokenizer, handle.vocab_size,
                 handle.max_positions)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_last_layer_is_the_models_own_logits_exactly(tiny, family):
    handle = tiny[0][family]
    df = logit_lens(PROMPT, model=handle, layers=[-1], k=3)
    logits = handle.logits(handle.encode(PROMPT))[0]
    logp = torch.log_softmax(logits, -1)
    assert list(df.columns) == list(COLUMNS)
    assert (df["kl"] == 0).all()
    top = logp.topk(3, -1)
    assert [list(t) for t in df["top_ids"]] == top.indices.tolist()
    assert [list(t) for t in df["top_probs"]] == top.values.exp().double().tolist()
    # without a target, each position's target is the model's own top token
    assert (df["target_rank"] == 0).all()


@pytest.mark.parametrize("family", ["mamba", "mamba2", "gpt2", "pythia", "granite_hybrid", "falcon_h1"])
def test_at_chosen_positions_the_last_layer_is_the_models_own_distribution_there(tiny, family):
    """Positions [2, 5, last] only: the last layer's row is `Model.logits` of the whole prompt at
    that position (KL exactly 0), not the head run again on the three kept residuals."""
    handle = tiny[0][family]
    ids = handle.as_input(handle.encode(PROMPT))
    T = ids.shape[1]
    df = logit_lens(ids, model=handle, positions=[2, 5, -1], k=3)
    last = df[df["layer"] == handle.n_layers - 1]
    logp = torch.log_softmax(handle.logits(ids)[0, [2, 5, T - 1]], -1)
    assert last["position"].tolist() == [2, 5, T - 1] and (last["kl"] == 0).all()
    assert [list(t) for t in last["top_probs"]] == logp.topk(3, -1).values.exp().double().tolist()
    assert last["entropy"].tolist() == (-(logp.exp() * logp).sum(-1)).double().tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_with_an_identity_final_norm_the_lens_is_a_plain_unembedding(tiny, family):
    handle = identity_norm(tiny[0][family])
    ids = handle.as_input(handle.encode(PROMPT))
    saved = {}
    with handle.nn.trace(ids):  # the residual after layer 0, read the way a user would
        saved["r"] = handle.point("resid_post", 0).save()
    resid = saved["r"][0].detach().double()
    W = handle.module.lm_head.weight.detach().double()[: handle.vocab_size]
    by_hand = torch.log_softmax(resid @ W.T, -1)  # [T, V]
    final = torch.log_softmax(handle.logits(ids)[0].double(), -1)
    target = handle.encode(" Mary")[0]
    df = logit_lens(ids, model=handle, layers=[0], target=" Mary", k=2)
    np.testing.assert_allclose(df["target_prob"], by_hand[:, target].exp(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(df["kl"], (final.exp() * (final - by_hand)).sum(-1), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(df["entropy"], -(by_hand.exp() * by_hand).sum(-1), rtol=1e-4)
    assert df["target_rank"].tolist() == (by_hand > by_hand[:, target:target + 1]).sum(-1).tolist()
    assert [list(t) for t in df["top_ids"]] == by_hand.topk(2, -1).indices.tolist()


@pytest.mark.parametrize("head_rows", [1, 6, 256])
def test_layers_decoded_together_are_each_layers_own_lens(tiny, monkeypatch, head_rows):
    """Granite-4.0-H's 4 layers in a shuffled order at 3 positions, HEAD_ROWS rows of logits per head
    call (1: a layer at a time, 6: two layers together, 256: all): each row is the head on that
    layer's traced resid_post, in the order asked."""
    from compare.analyses import lens

    monkeypatch.setattr(lens, "HEAD_ROWS", head_rows)
    handle = tiny[0]["granite_hybrid"]
    ids = handle.as_input(handle.encode(PROMPT))
    P, order = [0, 4, ids.shape[1] - 1], [2, 0, 3, 1]
    df = logit_lens(ids, model=handle, layers=order, positions=P, target=" Mary", k=2)
    traced = {}
    with handle.nn.trace(ids):  # in the order the forward reaches them
        for l in range(handle.n_layers):
            traced[l] = handle.point("resid_post", l).save()
    target = handle.encode(" Mary")[0]
    final = torch.log_softmax(handle.logits(ids)[0, P].double(), -1)
    assert df["layer"].tolist() == [l for l in order for _ in P]
    for layer in order:
        with torch.no_grad():
            logits = handle.arch.head(handle.module, traced[layer][0, P])[:, :handle.vocab_size]
        logp = torch.log_softmax(logits.double(), -1)
        rows = df[df["layer"] == layer]
        np.testing.assert_allclose(rows["kl"], (final.exp() * (final - logp)).sum(-1), atol=1e-5)
        np.testing.assert_allclose(rows["entropy"], -(logp.exp() * logp).sum(-1), atol=1e-5)
        np.testing.assert_allclose(rows["target_prob"], logp[:, target].exp(), atol=1e-6)
        assert [list(t) for t in rows["top_ids"]] == logp.topk(2, -1).indices.tolist()


def test_several_models_give_rows_for_each_layer_and_position(tiny):
    handles = [tiny[0]["mamba"], tiny[0]["gpt2"]]
    df = logit_lens(PROMPT, model=handles, positions=[0, -1])
    T = len(handles[0].encode(PROMPT))
    for handle in handles:
        rows = df[df["model"] == handle.name]
        assert rows[["layer", "position"]].values.tolist() == [[l, p] for l in range(handle.n_layers) for p in (0, T - 1)]
    assert df.loc[df["position"] == 0, "token"].eq("When").all()


@pytest.mark.parametrize("kwargs,argument", [
    (dict(target=" Mary John"), "target"),
    (dict(target=10**6), "target"),
    (dict(layers=[7]), "layers"),
    (dict(layers="all"), "layers"),
    (dict(positions=[99]), "positions"),
    (dict(k=0), "k"),
    (dict(lens="tuned"), "lens"),
])
def test_bad_input_is_refused_naming_the_argument(tiny, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        logit_lens(PROMPT, model=tiny[0]["gpt2"], **kwargs)


@pytest.mark.parametrize("prompt", ["   ", "\n\t "])
def test_a_prompt_that_tokenises_to_nothing_is_refused_naming_the_prompt(tiny, prompt):
    """The tiny word-level tokenizer drops whitespace: the prompt is text, but no tokens."""
    with pytest.raises(ValueError, match=r"prompt: .* is no tokens in gpt2's tokenizer .*at least one token"):
        logit_lens(prompt, model=tiny[0]["gpt2"])


@pytest.mark.parametrize("prompt,value", [(None, "None"), (b"When Mary", "b'When Mary'"), ({"text": "When"}, "{'text'"),
                                          ([1.0, 2.0], "1.0")])
def test_a_prompt_neither_text_nor_token_ids_is_refused_naming_the_prompt(tiny, prompt, value):
    with pytest.raises(TypeError, match=r"prompt must be a non-empty string or token IDs \[T\]; gpt2: token IDs "
                                        r"must be integers, got " + re.escape(value)):
        logit_lens(prompt, model=tiny[0]["gpt2"])
