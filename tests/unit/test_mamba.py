"""Hook-point semantics of the interpretable Mamba, each against a naive sequential loop.

`naive_forward` re-implements Mamba from the transformers model's weights one position at a time,
with an optional `edit(layer, t, h) -> (h_next_state, h_for_readout)` inside the recurrence: the
independent oracle for reads, state edits, read-out-only edits and patching.
"""
import pytest
import torch
import torch.nn.functional as F

IDS = torch.tensor([[2, 3, 4, 5, 6, 7, 8, 9, 10, 5, 11, 12, 13, 14]])  # the IOI sentence in the tiny vocab


def naive_forward(hf, ids, edit=None, record=None):
    bb = hf.backbone
    resid = bb.embeddings.weight[ids[0]].double()  # [l, d]
    l = resid.shape[0]
    for li, layer in enumerate(bb.layers):
        mx = layer.mixer
        w = {k: v.double() for k, v in mx.state_dict().items()}
        u = resid * torch.rsqrt(resid.pow(2).mean(-1, keepdim=True) + layer.norm.variance_epsilon) * layer.norm.weight.double()
        xz = u @ w["in_proj.weight"].T
        x_in, z = xz.chunk(2, dim=-1)
        k = w["conv1d.weight"].shape[-1]
        x = torch.stack([sum(w["conv1d.weight"][:, 0, k - 1 - j] * x_in[t - j] for j in range(k) if t - j >= 0)
                         + w["conv1d.bias"] for t in range(l)])
        x = F.silu(x)
        r = mx.time_step_rank
        n = mx.ssm_state_size
        dbc = x @ w["x_proj.weight"].T
        dt, B, C = dbc[:, :r], dbc[:, r:r + n], dbc[:, r + n:]
        delta = F.softplus(dt @ w["dt_proj.weight"].T + w["dt_proj.bias"])
        A = -torch.exp(w["A_log"])
        h = torch.zeros(x.shape[1], n, dtype=torch.float64)
        ys, hs = [], []
        for t in range(l):
            h = torch.exp(delta[t, :, None] * A) * h + delta[t, :, None] * B[t] * x[t, :, None]
            h_read = h
            if edit is not None:
                h, h_read = edit(li, t, h)
            hs.append(h_read)
            ys.append(h_read @ C[t] + w["D"] * x[t])
        y = torch.stack(ys)
        mixer_out = (y * F.silu(z)) @ w["out_proj.weight"].T
        if record is not None:
            record[li] = dict(x=x, delta=delta, B=B, C=C, h=torch.stack(hs), y=y, mixer_out=mixer_out,
                              resid_pre=resid)
        resid = resid + mixer_out
    f = bb.norm_f
    out = resid * torch.rsqrt(resid.pow(2).mean(-1, keepdim=True) + f.variance_epsilon) * f.weight.double()
    return (out @ hf.lm_head.weight.double().T).float().unsqueeze(0)


@pytest.fixture(scope="module")
def mamba(tiny):
    handles, refs = tiny
    return handles["mamba"], refs["mamba"]


def test_naive_oracle_matches_transformers(mamba):
    _, hf = mamba
    with torch.no_grad():
        torch.testing.assert_close(naive_forward(hf, IDS), hf(IDS).logits, atol=1e-4, rtol=0)


def test_logits_match_transformers(tiny):
    handles, refs = tiny
    for name in ("mamba", "mamba_ssm"):
        with torch.no_grad():
            expected = refs[name](IDS).logits[..., : handles[name].vocab_size]
        torch.testing.assert_close(handles[name].logits(IDS), expected, atol=1e-4, rtol=0)


def test_every_point_readable_at_every_layer_and_position(mamba):
    m, hf = mamba
    record = {}
    with torch.no_grad():
        naive_forward(hf, IDS, record=record)
    names = ("resid_pre", "x", "delta", "B", "C", "A_bar", "write", "h", "h_readout", "y", "mixer_out",
             "resid_post")
    got = [{} for _ in range(m.n_layers)]
    with m.nn.trace(IDS):
        for layer in range(m.n_layers):
            for n in names:
                got[layer][n] = m.point(n, layer).save()
    for layer, ref in record.items():
        g = {k: v[0].double() for k, v in got[layer].items()}
        for n in ("resid_pre", "x", "delta", "B", "C", "h", "y", "mixer_out"):  # y before the gate
            torch.testing.assert_close(g[n], ref[n], atol=1e-4, rtol=1e-4, msg=f"layer {layer} point {n}")
        torch.testing.assert_close(g["h_readout"], ref["h"], atol=1e-4, rtol=1e-4)
        A = -torch.exp(hf.backbone.layers[layer].mixer.A_log.double())
        torch.testing.assert_close(g["A_bar"], torch.exp(ref["delta"][..., None] * A), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(g["write"], ref["delta"][..., None] * ref["B"][:, None, :] * ref["x"][..., None],
                                   atol=1e-5, rtol=1e-5)
    assert got[0]["h"].shape == (1, IDS.shape[1], 64, 8)


def test_reading_points_does_not_change_logits(mamba):
    m, _ = mamba
    with m.nn.trace(IDS):
        m.point("h", 0).save()
        logits = m.point("logits").save()
    torch.testing.assert_close(logits[..., : m.vocab_size], m.logits(IDS), atol=1e-5, rtol=0)


def _noise(layer_shape, seed=0):
    return torch.randn(layer_shape, generator=torch.Generator().manual_seed(seed)) * 0.5


def test_additive_state_edit_propagates_through_recurrence(mamba):
    m, hf = mamba
    positions, noise = (2, 6), _noise((2, 64, 8))
    with m.nn.trace(IDS):
        h = m.point("h", 0)
        h[0, list(positions)] += noise
        logits = m.point("logits").save()

    def edit(layer, t, h):
        if layer == 0 and t in positions:
            h = h + noise[positions.index(t)].double()
        return h, h

    with torch.no_grad():
        expected = naive_forward(hf, IDS, edit=edit)
    torch.testing.assert_close(logits[..., : m.vocab_size], expected[..., : m.vocab_size], atol=1e-4, rtol=0)
    clean = m.logits(IDS)
    torch.testing.assert_close(logits[0, :2, : m.vocab_size], clean[0, :2], atol=1e-6, rtol=0)  # untouched
    assert (logits[0, -1, : m.vocab_size] - clean[0, -1]).abs().max() > 1e-3  # reached the last position


def test_readout_only_edit_changes_only_that_position(mamba):
    m, hf = mamba
    t0, noise = 4, _noise((64, 8), seed=1)
    with m.nn.trace(IDS):
        m.point("h_readout", 0)[0, t0] += noise
        logits = m.point("logits").save()

    def edit(layer, t, h):
        return h, (h + noise.double() if layer == 0 and t == t0 else h)

    with torch.no_grad():
        expected = naive_forward(hf, IDS, edit=edit)
    torch.testing.assert_close(logits[..., : m.vocab_size], expected[..., : m.vocab_size], atol=1e-4, rtol=0)
    y_changed = logits[0, :, : m.vocab_size] != m.logits(IDS)[0]
    assert y_changed[t0].any()


def test_patching_state_from_another_run_propagates(mamba):
    m, hf = mamba
    other = torch.tensor([[20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33]])
    layer, t0 = 1, 5
    with m.nn.trace(other):
        donor = m.point("h", layer)[0, t0].clone().save()
    with m.nn.trace(IDS):
        m.point("h", layer)[0, t0] = donor
        logits = m.point("logits").save()

    def edit(li, t, h):
        h = donor.double() if (li == layer and t == t0) else h
        return h, h

    with torch.no_grad():
        expected = naive_forward(hf, IDS, edit=edit)
    torch.testing.assert_close(logits[..., : m.vocab_size], expected[..., : m.vocab_size], atol=1e-4, rtol=0)


def test_torch_forward_hook_on_state_is_honoured(mamba):
    m, hf = mamba
    noise = _noise((1, IDS.shape[1], 64, 8), seed=3)
    handle = m.module.layers[1].mixer.hook_h.register_forward_hook(lambda mod, inp, out: out + noise)
    try:
        got = m.logits(IDS)
    finally:
        handle.remove()

    def edit(li, t, h):
        h = h + noise[0, t].double() if li == 1 else h
        return h, h

    with torch.no_grad():
        expected = naive_forward(hf, IDS, edit=edit)
    torch.testing.assert_close(got, expected[..., : m.vocab_size], atol=1e-4, rtol=0)


@pytest.mark.slow
def test_real_shape_logits_match_transformers():
    """mamba-130m's shape with random weights: d_model 768, 24 layers, vocab 50280; fp32, ≤ 1e-4."""
    from transformers import MambaConfig as HFConfig, MambaForCausalLM

    from compare.ssm.mamba import MambaConfig, MambaLM, init_random_

    torch.manual_seed(0)
    hf = MambaForCausalLM(HFConfig(vocab_size=50280, hidden_size=768, num_hidden_layers=24)).eval()
    init_random_(hf, seed=0, n_layer=24)
    ours = MambaLM(MambaConfig(d_model=768, n_layer=24, vocab_size=50280)).eval()
    ours.load_checkpoint(hf.state_dict())
    ids = torch.randint(0, 50277, (1, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours(ids) - hf(ids).logits).abs().max().item()
    assert diff <= 1e-4


def test_state_is_materialised_only_when_something_reads_it(mamba, monkeypatch):
    import compare.ssm.mamba as mamba_module

    m, _ = mamba
    calls = []
    real = mamba_module.linear_scan
    monkeypatch.setattr(mamba_module, "linear_scan", lambda *a: calls.append(1) or real(*a))
    m.logits(IDS)
    with m.nn.trace(IDS):
        m.point("resid_post", 0).save()
        m.point("y", 1).save()
    assert calls == []  # plain forward and traces of cheap points take the chunked scan
    with m.nn.trace(IDS):
        m.point("h", 1).save()
    assert len(calls) == 1  # only the traced layer materialises its states


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("l", [9, 2, 1])  # 2 and 1: shorter than the kernel
def test_causal_conv_matches_torch_conv1d(bias, l):
    from compare.ssm.mamba import causal_conv

    conv = torch.nn.Conv1d(6, 6, 4, groups=6, padding=3, bias=bias)
    x = torch.randn(2, l, 6)
    expected = conv(x.transpose(1, 2))[..., :l].transpose(1, 2)
    with torch.no_grad():
        torch.testing.assert_close(causal_conv(x, conv.weight, conv.bias), expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_last_only_block_is_the_full_blocks_last_position(bias):
    # the full block is held to the naive oracle above; last_only must agree with it
    from compare.ssm.mamba import MambaBlock, MambaConfig

    torch.manual_seed(0)
    block = MambaBlock(MambaConfig(d_model=8, n_layer=1, vocab_size=16, bias=bias)).eval()
    resid = torch.randn(3, 7, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(resid, last_only=True), block(resid)[:, -1:], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("materialised", [False, True])
def test_block_from_an_incoming_state_is_the_whole_sequence_there(mamba, materialised):
    """A block run on positions p.. with the state positions 0..p-1 hand on (`Prefix.state`)
    gives the naive oracle's block output at p..; p rising, then falling (the prefix restarts);
    materialised: a hook on h makes the block scan the state tensor (`linear_scan` from h0)."""
    from compare.ssm.mamba import PREFIX_POINTS, Prefix

    m, hf = mamba
    record = {}
    with torch.no_grad():
        naive_forward(hf, IDS, record=record)
    layer = 1
    block = m.module.layers[layer]
    seen = {}
    hooks = [m.arch.hook(m.module, name, layer, lambda v, name=name: seen.__setitem__(name, v.detach().clone()))
             for name in PREFIX_POINTS]
    m.logits(IDS)
    for hook in hooks:
        hook.remove()
    prefix = Prefix(block, seen)
    resid_pre = record[layer]["resid_pre"].float()[None]
    expected = (record[layer]["resid_pre"] + record[layer]["mixer_out"]).float()[None]
    hooks = [block.mixer.hook_h.register_forward_hook(lambda mod, inp, out: out)] if materialised else []
    try:
        with torch.no_grad():
            for p in (0, 1, 3, 9, 13, 2):
                got = block(resid_pre[:, p:].expand(2, -1, -1), state=prefix.state(p))
                torch.testing.assert_close(got, expected[:, p:].expand(2, -1, -1), atol=1e-4, rtol=0)
                last = block(resid_pre[:, p:], last_only=True, state=prefix.state(p))
                torch.testing.assert_close(last, expected[:, -1:], atol=1e-4, rtol=0)
    finally:
        for hook in hooks:
            hook.remove()
