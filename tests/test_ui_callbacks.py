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


PROMPT = "When Mary and John went to the store"


@pytest.fixture(scope="module")
def compared():
    from ui import tab_compare

    return tab_compare.run(PROMPT, "aligned", "Mary| John")


def test_compare_table_holds_each_models_argmax_and_its_probability(compared, tiny):
    import torch

    handles, refs = tiny
    table = compared[0]
    ids = handles["gpt2"].encode(PROMPT)
    with torch.no_grad():
        logits = refs["gpt2"](torch.tensor([ids])).logits[0, :, :64]
    probs = torch.softmax(logits, -1)
    expected = handles["gpt2"].decode_tokens(logits.argmax(-1).tolist())
    assert table["gpt2 prediction"].tolist() == expected
    assert table["gpt2 P"].tolist() == pytest.approx(probs.max(-1).values.tolist(), abs=1e-4)


def test_compare_offers_parquet_csv_and_png(compared):
    names = {p.rsplit("/", 1)[1] for p in compared[3]}
    assert {"runs.parquet", "table.csv", "trajectories.png", "metadata.json"} <= names


def test_compare_without_tracked_tokens_has_no_trajectory_plot():
    from ui import tab_compare

    assert tab_compare.run("cat dog", "native", "")[1] is None


def test_tracked_tokens_keep_their_spaces():
    from ui.tab_compare import tracked_tokens

    assert tracked_tokens(" Mary| John|") == [" Mary", " John"]
    assert tracked_tokens("") is None


def test_unknown_variant_is_refused():
    from ui import tab_compare

    with pytest.raises(gr.Error, match="variant must be one of"):
        tab_compare.run(PROMPT, "shuffled", "")


def test_distributions_list_k_statistics_per_position(compared):
    import numpy as np

    from ui import tab_distributions

    comparison = compared[-1]
    table = tab_distributions.show(comparison)[1]
    k = comparison.runs["mamba"].k
    rows = table[table["model"] == "mamba"]
    assert rows["variance"].tolist() == pytest.approx(np.var(k.astype(float), axis=1), rel=1e-4)


def test_distributions_before_compare_say_what_to_do():
    from ui import tab_distributions

    with pytest.raises(gr.Error, match="Compare tab first"):
        tab_distributions.show(None)


def test_periodic_pattern_repeats_the_cycle():
    from ui import tab_patterns

    assert tab_patterns.pattern(tab_patterns.cycle_ids("periodic", "ids", "4, 5"), 5) == [4, 5, 4, 5, 4]


def test_monotone_pattern_from_text_needs_one_token():
    from ui import tab_patterns

    with pytest.raises(limits.InputError, match="2 tokens"):
        tab_patterns.cycle_ids("monotone", "text", "cat dog")


def test_pattern_preview_and_lock_in():
    from ui import tab_patterns

    preview, lock_in, _ = tab_patterns.run("periodic", "text", "cat dog", 8)
    assert preview["mamba token"].tolist() == ["cat", "dog"] * 4
    assert not preview["flagged"].any()
    assert sorted(lock_in["model"]) == ["gpt2", "mamba"]


def test_noise_layers_parse_ranges_and_refuse_missing_layers():
    from ui.tab_noise import parse_layers

    assert parse_layers("all", 3) == [0, 1, 2]
    assert parse_layers("0, 2-3", 4) == [0, 2, 3]
    with pytest.raises(limits.InputError, match="0..1"):
        parse_layers("5", 2)


def test_noise_sweep_streams_one_update_per_layer_then_files():
    from ui import tab_noise

    updates = list(tab_noise.run("gpt2", PROMPT, "Mary", "resid_post", "all", 0.0, 1.0, 4, 1,
                                 "gaussian", "relative", 0))
    assert len(updates) == 3  # 2 layers + the fitted result
    fits, files = updates[-1][3], updates[-1][4]
    assert fits["layer"].tolist() == [0, 1]
    assert any(p.endswith("noise_sweep.parquet") for p in files)


def test_noise_sweep_over_the_cap_is_refused_before_compute():
    from ui import tab_noise

    with pytest.raises(gr.Error, match="sweep too large"):
        next(tab_noise.run("gpt2", PROMPT, "Mary", "resid_post", "all", 0.0, 1.0, 200, 20,
                           "gaussian", "relative", 0))


def test_a_cleared_number_box_is_named_in_the_error():
    from ui import tab_noise

    with pytest.raises(gr.Error, match="seed is empty"):
        next(tab_noise.run("gpt2", PROMPT, "Mary", "resid_post", "all", 0.0, 1.0, 4, 1,
                           "gaussian", "relative", None))


def test_dataset_build_previews_rows_and_writes_parquet():
    from ui import tab_datasets

    *_, (preview, files) = tab_datasets.run(["monotone", "repeated_random"], 2, 0)
    assert len(preview) == 4
    assert len(files) == 2 and all(f.endswith(".parquet") for f in files)


def test_dataset_size_is_capped():
    from ui import tab_datasets

    with pytest.raises(gr.Error, match="prompts per suite"):
        next(tab_datasets.run(["monotone"], 10_000, 0))


def test_old_download_directories_are_pruned(tmp_path, monkeypatch):
    import os

    from ui import downloads

    monkeypatch.setattr(downloads, "ROOT", tmp_path)
    stale = tmp_path / "stale"
    stale.mkdir()
    os.utime(stale, (0, 0))
    fresh = downloads.new_directory()
    assert fresh.parent == tmp_path and fresh.is_dir() and not stale.exists()


CHANNEL_RUN = dict(role="gpt2", prompt=PROMPT, target="Mary", component="mlp_out", layer=1, level=1.0,
                   trials=2, seed=0)


@pytest.fixture(scope="module")
def ranked():
    from ui import tab_channels

    return tab_channels.run(**CHANNEL_RUN)


def hand_flip_rates(handle, component, layer, level, trials, seed):
    """Flip rate per channel from plain nnsight traces: ε of (seed, layer, trial) on one channel, relative scale."""
    import torch

    from compare.noise import draw_noise

    ids = handle.as_input(handle.encode(PROMPT))
    clean = handle.logits(ids)[0, -1].argmax().item()
    with handle.nn.trace(ids):
        value = handle.point(component, layer).save()
    unit = value.float().pow(2).mean().sqrt()
    rates = []
    for channel in range(value.shape[-1]):
        flips = 0
        for trial in range(trials):
            eps = draw_noise(value.shape[1:], seed=seed, layer=layer, trial=trial, distribution="gaussian")
            mask = torch.zeros_like(eps)
            mask[:, channel] = 1
            with handle.nn.trace(ids):
                handle.point(component, layer)[0] += level * unit * eps * mask
                logits = handle.point("logits").save()
            flips += logits[0, -1, : handle.vocab_size].argmax().item() != clean
        rates.append(flips / trials)
    return rates


def test_channel_table_leads_with_the_channel_that_flips_most(ranked, tiny):
    run = CHANNEL_RUN
    rates = hand_flip_rates(tiny[0]["gpt2"], run["component"], run["layer"], run["level"], run["trials"], run["seed"])
    table = ranked[1]
    assert len(table) > 0
    assert rates[table["channel"].iloc[0]] == max(rates)


def test_channel_ranking_shows_bars_and_offers_csv_and_parquet(ranked):
    from matplotlib.figure import Figure

    bars, _, files = ranked
    assert isinstance(bars, Figure) and bars.axes[0].get_title() == "channels by flip rate"
    assert sorted(p.rsplit("/", 1)[1] for p in files) == ["channel_sensitivity.csv", "channel_sensitivity.parquet"]


def test_channel_ranking_on_a_missing_layer_is_a_readable_error():
    from ui import tab_channels

    with pytest.raises(gr.Error, match=r"layer must be an int in 0\.\.1"):
        tab_channels.run(**{**CHANNEL_RUN, "layer": 7})


def test_channel_ranking_over_the_cap_counts_both_axes_of_h(tiny, monkeypatch):
    from ui import tab_channels

    cfg = tiny[0]["mamba"].module.config
    n = cfg.d_inner + cfg.d_state
    monkeypatch.setattr(limits, "LIMITS", limits.Limits(channel_runs=2 * n - 1))
    with pytest.raises(gr.Error, match=f"{n} channels × 2 trials = {2 * n} noisy runs; the cap is {2 * n - 1}"):
        tab_channels.run(**{**CHANNEL_RUN, "role": "mamba", "component": "h"})
