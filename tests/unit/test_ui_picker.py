"""The models picked on a tab are the ones its checks use, offline, with no configured pair loadable.

Expected values come from the models' own tokenizers and `compare.load_model`, not the callbacks.
"""
from __future__ import annotations

import socket
import time

import gradio as gr
import pytest

from compare import ModelLoadError, load_model
from ui import models

PROMPT = "When Mary and John went to the store"


def last(stream):
    *_, final = stream
    return final


@pytest.fixture
def offline(monkeypatch):
    """No configured model loads (as a newcomer with no env vars, offline) and the Hub is unreachable."""
    import huggingface_hub.constants

    with socket.socket() as s:  # a port nothing listens on: the Hub probe is refused at once
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setattr(models, "_configured", {"mamba": "/nowhere/mamba", "gpt2": "/nowhere/gpt2"})
    monkeypatch.setattr(models, "HUB", ("127.0.0.1", closed))
    monkeypatch.setattr(models, "_hub", {})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", huggingface_hub.constants.HF_HUB_OFFLINE)


def test_compare_checks_the_prompt_with_the_picked_folders(offline, tiny_dirs):
    from ui import tab_compare

    dirs, _ = tiny_dirs
    picked = [str(dirs["pythia"]), str(dirs["gpt2"])]
    table = last(tab_compare.run(PROMPT, "aligned", "", chosen=picked))[0]
    names = [load_model(d).name for d in picked]
    assert f"{names[0]} prediction" in table.columns and f"{names[1]} prediction" in table.columns
    assert len(table) == len(load_model(picked[0]).encode(PROMPT))


def test_compare_refuses_a_prompt_over_the_cap_of_a_picked_model(offline, tiny_dirs):
    from ui import limits, tab_compare

    dirs, _ = tiny_dirs
    with pytest.raises(gr.Error, match=f"cap is {limits.LIMITS.prompt_tokens} tokens"):
        last(tab_compare.run("cat " * (limits.LIMITS.prompt_tokens + 1), "aligned", "",
                             chosen=[str(dirs["pythia"]), str(dirs["gpt2"])]))


def test_noise_sweeps_a_folder_with_a_token_id_target(offline, tiny_dirs):
    from ui import tab_noise

    dirs, _ = tiny_dirs
    handle = load_model(dirs["mamba"])
    note, *_, (df, fits) = last(tab_noise.run(str(dirs["mamba"]), PROMPT, "#5", "h", "0", 0.0, 1.0, 2, 1,
                                              "gaussian", "relative", 0))
    assert f"P(target {handle.tokenizer.decode([5])!r})" in note
    assert len(df) == 2 and set(df["layer"]) == {0}


def test_tokenizers_tab_tokenises_with_the_picked_models(offline, tiny_dirs):
    from ui import tab_tokenizers

    dirs, _ = tiny_dirs
    picked = [str(dirs["pythia"]), str(dirs["gpt2"])]
    table, stats, _ = tab_tokenizers.run("the cat", picked)
    pythia = load_model(picked[0])
    assert table[f"{pythia.name} ids"].str.split().sum() == [str(i) for i in pythia.encode("the cat")]
    assert set(stats["model"]) == {pythia.name, load_model(picked[1]).name}


def test_a_folder_without_a_tokenizer_fails_at_once_naming_the_file_to_add(offline, tmp_path):
    from conftest import build_mamba_ssm

    folder = tmp_path / "no-tokenizer"
    build_mamba_ssm(folder, with_tokenizer=False)
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="add tokenizer.json") as info:
        models.load(str(folder))
    assert time.monotonic() - start < 10  # one refused Hub probe, not ~45 s of retries
    assert str(folder) in str(info.value)


def test_byte_level_pieces_show_their_bytes():
    from compare.handle.vocabularies import token_texts
    from conftest import shared_tokenizer
    from ui.tab_tokenizers import token_text

    tokenizer = shared_tokenizer("gpt2")

    class Handle:
        def decode_tokens(self, ids):
            return token_texts(tokenizer, ids)

    handle = Handle()
    handle.tokenizer = tokenizer
    ids = tokenizer.encode("’", add_special_tokens=False)  # U+2019: bytes e2 80 99, two GPT-2 pieces
    raw = "’".encode("utf-8")
    shown = [token_text(handle, i) for i in ids]
    assert "".join(shown) == "".join(f"\\x{b:02x}" for b in raw)
    assert token_text(handle, tokenizer.encode(" Mary", add_special_tokens=False)[0]) == "␣Mary"


def test_compare_table_shows_byte_pieces_as_their_bytes(real_vocab_models):
    """GPT-2 cuts ’ (e2 80 99) and ☃ (e2 98 83) into pieces that decode to "�" alone."""
    from compare import compare
    from ui.tab_compare import input_tokens, shown, side_by_side

    mamba, gpt2 = real_vocab_models
    comparison = compare("It’s a café ☃", [gpt2, mamba], variant="native", progress=False)
    assert comparison.runs["gpt2"].tokens[1:3] == ["\ufffd", "\ufffd"]  # what the table used to show
    table = shown(side_by_side(comparison, [gpt2, mamba]))
    # by hand: It | e2 80 | 99 | s | ␣a | ␣café (whole: é is c3 a9, valid) | ␣ e2 98 | 83
    assert table["gpt2 token"].tolist() == ["It", "\\xe2\\x80", "\\x99", "s", "␣a", "␣café", "␣\\xe2\\x98", "\\x83"]
    cells = [cell for column in table.columns for cell in table[column] if isinstance(cell, str)]
    assert not any("\ufffd" in cell for cell in cells)  # predictions and the other model's pieces too
    assert input_tokens(comparison, [gpt2, mamba])["gpt2"][6] == " \\xe2\\x98"  # the figure's labels
