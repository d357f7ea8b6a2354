"""The app's callbacks on tiny random models: their outputs, and bad input as readable errors.

Expected values come from the tokenizer and plain forwards, not from the callbacks' own helpers.
"""
from __future__ import annotations

import gradio as gr
import pytest

from ui import limits, models


@pytest.fixture(scope="module", autouse=True)
def tiny_sources(tiny_dirs):
    dirs, _ = tiny_dirs
    models.configure(mamba=str(dirs["mamba"]), gpt2=str(dirs["gpt2"]))


def test_model_cache_loads_each_source_once():
    assert models.get("mamba") is models.get("mamba")
    assert models.get("gpt2").family == "gpt2"


def test_source_precedence_configure_over_env(monkeypatch):
    monkeypatch.setenv("MAMBA_MODEL", "/somewhere/else")
    assert models.source("mamba") == models._configured["mamba"]


def test_source_falls_back_to_env_then_default(monkeypatch):
    monkeypatch.setattr(models, "_configured", {})
    monkeypatch.setenv("GPT2_MODEL", "/env/gpt2")
    monkeypatch.delenv("MAMBA_MODEL", raising=False)
    assert (models.source("gpt2"), models.source("mamba")) == ("/env/gpt2", "mamba-130m")


def test_tokenize_lists_ids_side_by_side():
    from conftest import tiny_tokenizer

    from ui import tab_tokenizers

    frame = tab_tokenizers.tokenize("When Mary went")
    expected = tiny_tokenizer().encode("When Mary went", add_special_tokens=False)
    assert frame["mamba id"].tolist() == expected == frame["gpt2 id"].tolist()
    assert frame["gpt2 token"].tolist() == ["When", "Mary", "went"]


def test_visible_marks_whitespace():
    from ui.tab_tokenizers import visible

    assert visible(" a\n\t") == "␣a↵⇥"


def test_tokenizer_stats_cover_text_and_vocabulary():
    from ui import tab_tokenizers

    frame = tab_tokenizers.stats("cat dog")
    assert sorted(zip(frame["model"], frame["over"])) == sorted(
        (m, o) for m in models.MODELS for o in ("text", "vocabulary"))
    assert frame.loc[frame["over"] == "text", "n_tokens"].tolist() == [2, 2]


@pytest.mark.parametrize("text", ["", "   ", None])
def test_empty_text_is_a_readable_error(text):
    from ui import tab_tokenizers

    with pytest.raises(gr.Error, match="empty"):
        tab_tokenizers.run(text)


def test_over_long_text_names_the_cap_and_reason():
    from ui import tab_tokenizers

    with pytest.raises(gr.Error, match=f"cap is {limits.LIMITS.text_chars}.*queue"):
        tab_tokenizers.run("a " * limits.LIMITS.text_chars)


@pytest.mark.parametrize("layers, levels, trials", [(2, 100, 20), (0, 10, 1), (1, 10, 0), (1, 1000, 1)])
def test_absurd_sweeps_are_refused(layers, levels, trials):
    with pytest.raises(limits.InputError):
        limits.check_sweep(layers, levels, trials)


def test_error_messages_are_html_escaped():
    @limits.shown_to_user
    def fails():
        raise ValueError("token <|endoftext|> is special")

    with pytest.raises(gr.Error) as info:
        fails()
    assert "&lt;|endoftext|&gt;" in info.value.message
