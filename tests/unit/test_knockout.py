"""knockout: nothing changes nothing; attention knockout of every earlier edge is the model run on the
target token alone; Mamba's is the read-out of a state re-scanned without the sources' writes."""
from __future__ import annotations

import pytest
import torch

from compare.analyses.knockout import COLUMNS, knockout
from compare.ssm.scan import linear_scan_ref

PROMPT = "When Mary and John went to the store , John gave a drink to"
IDS = [2, 3, 4, 5, 6, 7, 8, 9, 10, 5, 11, 12, 13, 7]  # PROMPT in the tiny tokenizer
FAMILIES = ("mamba", "gpt2", "pythia")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("sources,layers", [([], [0, 1]), ([0, 3], [])])
def test_a_knockout_of_nothing_changes_nothing(tiny, family, sources, layers):
    handle = tiny[0][family]
    df = knockout(PROMPT, model=handle, sources=sources, target=-1, layers=layers)
    row = df.iloc[0]
    assert list(df.columns) == list(COLUMNS)
    assert row["p_after"] == row["p_before"] and row["delta_p"] == 0 and row["kl"] == 0
    assert row["predicted"] == row["predicted_knockout"]
    logits = handle.logits(IDS)[0, -1]
    assert row["p_before"] == torch.softmax(logits, -1).max().item()


@pytest.mark.parametrize("family", ["gpt2", "pythia"])
def test_attention_knockout_of_every_earlier_edge_is_the_last_token_alone(tiny, family):
    # every layer, the last position attends to itself only: its residual is the model's on that token alone
    # (GPT-2 at its own absolute position; Pythia's rotary leaves a self-edge unchanged)
    handle, ref = tiny[0][family], tiny[1][family]
    T = len(IDS)
    df = knockout(IDS, model=handle, sources=range(T - 1), target=T - 1, layers=range(handle.n_layers),
                  answer=IDS[2])
    with torch.no_grad():
        alone = ref(torch.tensor([IDS[-1:]]), position_ids=torch.tensor([[T - 1]])).logits[0, -1]
    assert df["p_after"].iloc[0] == pytest.approx(torch.softmax(alone[:handle.vocab_size], -1)[IDS[2]].item(), abs=1e-5)
    assert df["kl"].iloc[0] > 1e-3


@pytest.mark.parametrize("layer,sources,target", [(1, [0, 3, 8], 13), (0, [2], 5), (1, [0, 1, 2, 3, 4], 4)])
def test_mamba_knockout_reads_out_a_state_rescanned_without_the_sources_writes(tiny, layer, sources, target):
    handle = tiny[0]["mamba"]
    with torch.no_grad(), handle.nn.trace(torch.tensor([IDS])):
        A_bar = handle.point("A_bar", layer)
        write = handle.point("write", layer).clone()
        write[:, sources] = 0
        handle.point("h_readout", layer)[:, target] = linear_scan_ref(A_bar, write)[:, target]
        expected = handle.point("logits").save()
    p = torch.softmax(expected[0, -1, :handle.vocab_size], -1)
    df = knockout(IDS, model=handle, sources=sources, target=target, layers=[layer], answer=5)
    assert df["p_after"].iloc[0] == pytest.approx(p[5].item(), abs=1e-5)
    assert df["p_after"].iloc[0] != df["p_before"].iloc[0]


def test_a_knockout_away_from_the_last_position_in_the_last_layer_changes_nothing(tiny):
    # the target's row changes, and in the last layer no later position reads it
    handle = tiny[0]["gpt2"]
    df = knockout(IDS, model=handle, sources=[0, 1], target=5, layers=[1])
    assert df["delta_p"].iloc[0] == pytest.approx(0, abs=1e-6)


def test_several_models(tiny):
    handles = tiny[0]
    df = knockout(PROMPT, model=[handles["mamba"], handles["pythia"]], sources=[1], target=-1, layers=[0])
    assert df["model"].tolist() == ["mamba", "pythia"]


@pytest.mark.parametrize("family,kwargs,message", [
    ("gpt2", dict(target=14), r"target must be one token position in -14\.\.13"),
    ("gpt2", dict(target=[3]), r"target must be one token position"),
    ("gpt2", dict(sources=[20]), r"sources must be token positions in -14\.\.13"),
    ("gpt2", dict(sources=[6], target=5), r"sources must be positions ≤ target \(5\)"),
    ("gpt2", dict(sources=[0, 1, 2], target=2), r"sources cover every position 0\.\.2"),
    ("gpt2", dict(layers=[2]), r"layers must be a list of ints in 0\.\.1"),
    ("mamba", dict(layers="all"), r"layers must be a list of ints"),
    ("mamba", dict(answer=" Mary Mary"), r"answer: ' Mary Mary' is 2 tokens"),
])
def test_bad_arguments(tiny, family, kwargs, message):
    kw = dict(model=tiny[0][family], sources=[1], target=-1, layers=[0])
    kw.update(kwargs)
    with pytest.raises(ValueError, match=message):
        knockout(PROMPT, **kw)


def test_mamba_may_remove_every_source(tiny):
    df = knockout(PROMPT, model=tiny[0]["mamba"], sources=[0, 1, 2], target=2, layers=[0])
    assert len(df) == 1
