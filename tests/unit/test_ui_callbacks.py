"""The app's callbacks on tiny random models: their outputs, and bad input as readable errors.

Expected values come from the tokenizer and plain forwards, not from the callbacks' own helpers.
"""
from __future__ import annotations

import gradio as gr
import pytest

from ui import limits, models

pytestmark = pytest.mark.usefixtures("tiny_sources")


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


def last(stream):
    """The final update of a streaming callback."""
    *_, final = stream
    return final


def test_tokenize_lists_ids_side_by_side():
    from conftest import tiny_tokenizer

    from ui import tab_tokenizers

    frame = tab_tokenizers.tokenize("When Mary went")
    expected = tiny_tokenizer().encode("When Mary went", add_special_tokens=False)
    assert [int(i) for i in frame["mamba ids"]] == expected == [int(i) for i in frame["gpt2 ids"]]
    assert frame["gpt2 tokens"].tolist() == ["When", "Mary", "went"]


def test_tokenize_rows_are_spans_both_tokenizers_cut_at_their_ends(monkeypatch):
    from ui import tab_tokenizers

    # GPT-2's tokenizer made to read "When Mary" as one token: one row holds the span, both sides
    ends = {"mamba": [(5, 0, 4), (6, 5, 9), (7, 10, 14)], "gpt2": [(9, 0, 9), (7, 10, 14)]}
    monkeypatch.setattr(tab_tokenizers, "token_spans", lambda model, text: ends[model.family])
    frame = tab_tokenizers.tokenize("When Mary went")
    assert frame["text"].tolist() == ["When␣Mary", "␣went"]
    assert frame["mamba ids"].tolist() == ["5 6", "7"]
    assert frame["gpt2 ids"].tolist() == ["9", "7"]


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


def test_error_message_leads_with_its_title():
    @limits.shown_to_user
    def refuses():
        raise limits.InputError("levels must be in 1..200")

    with pytest.raises(gr.Error) as info:
        refuses()
    assert info.value.title == "Input refused"
    assert info.value.message.startswith("<strong>Input refused</strong>: levels")


PROMPT = "When Mary and John went to the store"


@pytest.fixture(scope="module")
def compared():
    from ui import tab_compare

    return last(tab_compare.run(PROMPT, "aligned", "Mary| John"))


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
    assert [float(p) for p in table["gpt2 P"]] == pytest.approx(probs.max(-1).values.tolist(), rel=1e-2)


def test_compare_table_shows_p_in_scientific_notation(compared):
    import re

    assert all(re.fullmatch(r"\d\.\d\de[-+]\d\d", p) for p in compared[0]["gpt2 P"])


def test_compare_click_writes_no_files_and_prepare_downloads_offers_parquet_csv_and_png(compared):
    from compare.base.store import MARKER
    from ui import tab_compare

    assert compared[3] is None  # written on demand, not at every click
    paths = tab_compare.prepare_downloads(compared[5], PROMPT, "aligned", "Mary| John")
    names = {p.rsplit("/", 1)[1] for p in paths}
    assert {"runs.parquet", "table.csv", "trajectories.png", "metadata.json"} <= names
    assert MARKER not in names and not any(name.startswith(".") for name in names)


def test_prepare_downloads_after_an_example_computes_the_shown_comparison():
    import pandas as pd

    from ui import models, tab_compare

    paths = tab_compare.prepare_downloads(None, "cat dog cat", "native", "")
    table = pd.read_csv(next(p for p in paths if p.endswith("table.csv")))
    assert len(table) == len(models.get("mamba").encode("cat dog cat"))


def test_compare_without_tracked_tokens_has_no_trajectory_plot():
    from ui import tab_compare

    assert last(tab_compare.run("cat dog", "native", ""))[1] is None


def test_tracked_tokens_keep_their_spaces():
    from ui.tab_compare import tracked_tokens

    assert tracked_tokens(" Mary| John|") == [" Mary", " John"]
    assert tracked_tokens("") is None


def test_unknown_variant_is_refused():
    from ui import tab_compare

    with pytest.raises(gr.Error, match="variant: .* is not allowed; allowed values are native, same_ids, aligned"):
        next(tab_compare.run(PROMPT, "shuffled", ""))


def test_distributions_list_k_statistics_per_position(compared):
    import numpy as np

    from ui import tab_distributions

    comparison = compared[-1]
    table = last(tab_distributions.show(comparison, PROMPT, "aligned"))[1]
    k = comparison.runs["mamba"].k
    rows = table[table["model"] == "mamba"]
    assert rows["variance"].tolist() == pytest.approx(np.var(k.astype(float), axis=1), rel=1e-4)


def test_distributions_before_compare_say_what_to_do():
    from ui import tab_distributions

    with pytest.raises(gr.Error, match="prompt \\(on the Compare tab\\) is empty"):
        next(tab_distributions.show(None, "", "aligned"))


def test_distributions_of_an_empty_prompt_refuse_rather_than_show_the_previous_comparison(compared):
    from ui import tab_distributions

    with pytest.raises(gr.Error, match="prompt \\(on the Compare tab\\) is empty"):
        next(tab_distributions.show(compared[5], "", "aligned"))


def test_periodic_pattern_repeats_the_cycle():
    from ui import tab_patterns

    assert tab_patterns.pattern(tab_patterns.cycle_ids("periodic", "ids", "4, 5", models.get("mamba")), 5) == [4, 5, 4, 5, 4]


def test_monotone_pattern_from_text_needs_one_token():
    from ui import tab_patterns

    with pytest.raises(limits.InputError, match="2 tokens"):
        tab_patterns.cycle_ids("monotone", "text", "cat dog", models.get("mamba"))


def test_pattern_preview_and_lock_in():
    from ui import tab_patterns

    preview, lock_in, _, _ = last(tab_patterns.run("periodic", "text", "cat dog", 8))
    assert preview["mamba token"].tolist() == ["cat", "dog"] * 4
    assert not preview["flagged"].any()
    assert sorted(lock_in["model"]) == ["gpt2", "mamba"]


def test_noise_layers_parse_ranges_and_refuse_missing_layers():
    from ui.tab_noise import parse_layers

    assert parse_layers("all", 3) == [0, 1, 2]
    assert parse_layers("0, 2-3", 4) == [0, 2, 3]
    with pytest.raises(limits.InputError, match="0..1"):
        parse_layers("5", 2)


NOISE = dict(model_name="gpt2", prompt=PROMPT, target="Mary", component="resid_post", layers="all", low=0.0,
             high=1.0, n_levels=4, trials=1, distribution="gaussian", scale="relative", seed=0)


def test_noise_sweep_ends_with_fits_for_every_layer_and_files():
    from ui import tab_noise

    note, *_, fits, files, picker, (df, _) = last(tab_noise.run(**NOISE))
    assert fits["layer"].tolist() == [0, 1]
    assert any(p.endswith("noise_sweep.parquet") for p in files)
    assert "Stopped" not in note


def test_noise_sweep_is_one_engine_call_for_all_layers(monkeypatch):
    from compare.analyses.noise import noise_sweep

    from ui import tab_noise

    calls = []
    monkeypatch.setattr(tab_noise, "noise_sweep", lambda *a, **kw: calls.append(kw["layers"]) or noise_sweep(*a, **kw))
    last(tab_noise.run(**NOISE))
    assert calls == [[0, 1]]


def test_noise_sweep_reports_progress_per_layer():
    from ui import tab_noise

    seen = []
    last(tab_noise.run(**NOISE, progress=lambda value, **kw: seen.append(value)))
    assert seen[0] == (0, 2) and seen[-1] == (2, 2)


def test_noise_sweep_says_when_the_clean_prediction_is_not_the_target(tiny):
    import torch

    from ui import tab_noise

    handle = tiny[0]["gpt2"]
    probs = torch.softmax(handle.logits(handle.encode(PROMPT))[0, -1], -1)
    wrong = next(i for i in probs.argsort(descending=True).tolist()[1:] if i > 1)
    token = handle.decode_tokens([wrong])[0]
    first = next(tab_noise.run(**{**NOISE, "target": token}))
    assert "not the target" in first[0]
    assert f"P(target {token!r}) = {float(probs[wrong]):.3g}" in first[0]


class Session:
    session_hash = "test-session"


def test_noise_stop_keeps_finished_layers_downloadable(monkeypatch):
    import threading

    from compare.analyses.noise import noise_sweep

    from ui import jobs, tab_noise

    first_layer_done = threading.Event()

    def stopped_after_first(*args, progress, stop, **kwargs):
        def report(done, total):
            progress(done, total)
            if done == 1:  # Stop pressed while layer 1 runs
                jobs.request_stop(Session, tab_noise.VIEW)
        return noise_sweep(*args, progress=report, stop=stop, **kwargs)

    monkeypatch.setattr(tab_noise, "noise_sweep", stopped_after_first)
    note, *_, fits, files, picker, (df, _) = last(tab_noise.run(**NOISE, request=Session))
    assert "Stopped after layer 0" in note
    assert sorted(df["layer"].unique()) == [0] and fits["layer"].tolist() == [0]
    assert any(p.endswith("noise_sweep_partial.csv") for p in files)


def test_noise_layers_to_plot_redraw_the_picked_layers():
    from ui import tab_noise

    result = last(tab_noise.run(**NOISE))[-1]
    figure = tab_noise.redraw(result, [1])
    assert [ax.get_title() for ax in figure.axes if ax.get_title()] == ["layer 1"]


def test_noise_reversed_layer_range_is_refused_with_the_fix():
    from ui.tab_noise import parse_layers

    with pytest.raises(limits.InputError, match="runs backwards; write it low to high, '2-5'"):
        parse_layers("5-2", 8)


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


CHANNEL_RUN = dict(model_name="gpt2", prompt=PROMPT, target="Mary", component="mlp_out", layer=1, level=1.0,
                   trials=2, seed=0)


@pytest.fixture(scope="module")
def ranked():
    from ui import tab_channels

    return last(tab_channels.run(**CHANNEL_RUN))[1:]


def hand_flip_rates(handle, component, layer, level, trials, seed):
    """Flip rate per channel from plain nnsight traces: ε of (seed, layer, trial) on one channel, relative scale."""
    import torch

    from compare.analyses.noise import draw_noise

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
    assert isinstance(bars, Figure) and bars.axes[0].get_title() == "d by flip rate"  # GPT-2 mlp_out: its glossary letter
    assert sorted(p.rsplit("/", 1)[1] for p in files) == ["channel_sensitivity.csv", "channel_sensitivity.parquet"]


def test_channel_ranking_on_a_missing_layer_is_a_readable_error():
    from ui import tab_channels

    with pytest.raises(gr.Error, match=r"layer must be an int in 0\.\.1"):
        next(tab_channels.run(**{**CHANNEL_RUN, "layer": 7}))


def test_channel_ranking_over_the_cap_counts_both_axes_of_h(tiny, monkeypatch):
    from ui import tab_channels

    cfg = tiny[0]["mamba"].module.config
    n = cfg.d_inner + cfg.d_state
    monkeypatch.setattr(limits, "LIMITS", limits.Limits(channel_runs=2 * n - 1))
    with pytest.raises(gr.Error, match=f"{n} channels × 2 trials = {2 * n} noisy runs; the cap is {2 * n - 1}"):
        next(tab_channels.run(**{**CHANNEL_RUN, "model_name": "mamba", "component": "h"}))


def test_channel_stop_keeps_the_channels_ranked_so_far(monkeypatch):
    from compare import channel_sensitivity
    from compare.analyses import noise

    from ui import jobs, tab_channels

    def stopped_early(*args, progress, stop, **kwargs):
        def report(done, total):
            progress(done, total)
            jobs.request_stop(Session, tab_channels.VIEW)
        return channel_sensitivity(*args, progress=report, stop=stop, **kwargs)

    monkeypatch.setattr(tab_channels, "channel_sensitivity", stopped_early)
    monkeypatch.setattr(noise, "READ_ROWS", 16)  # several blocks of runs, so Stop lands between two
    note, bars, table, files = last(tab_channels.run(**{**CHANNEL_RUN, "model_name": "mamba", "component": "h"},
                                                     request=Session))
    assert note.startswith("**Stopped**")
    assert any(p.endswith("channel_sensitivity_partial.csv") for p in files)


def test_channel_ranking_reports_runs_done():
    from ui import tab_channels

    seen = []
    last(tab_channels.run(**CHANNEL_RUN, progress=lambda value, **kw: seen.append(value)))
    total = 32 * CHANNEL_RUN["trials"]  # GPT-2's d_model channels × trials
    assert seen[0] == (0, total) and seen[-1] == (total, total)


def test_closing_the_compare_stream_stops_the_engine(monkeypatch):
    import threading
    import time

    from ui import tab_compare

    exited = threading.Event()

    def endless(*args, stop, **kwargs):
        while not stop.is_set():
            time.sleep(0.01)
        exited.set()
        raise RuntimeError("stopped")

    monkeypatch.setattr(tab_compare, "compare", endless)
    stream = tab_compare.run(PROMPT, "aligned", "")
    next(stream)  # the engine is running
    stream.close()  # what Gradio does on Stop
    assert exited.wait(2.0)


def test_model_events_queue_in_a_long_and_a_short_group():
    from ui import app

    demo = app.build_app(heavy_limit=1)
    groups = {}
    for fn in demo.fns.values():
        if getattr(fn.fn, "__module__", "").startswith("ui.tab_") and fn.name in ("run", "show"):
            groups[fn.fn.__module__.removeprefix("ui.tab_")] = (fn.concurrency_id, fn.concurrency_limit)
    short, long = (app.SHORT, 1), (app.HEAVY, 1)
    assert groups == {"compare": short, "distributions": short, "patterns": short, "lens": short, "tokenizers": short,
                      "noise": long, "channels": long, "patching": long, "datasets": long, "report": long}


def test_stop_takes_a_waiting_job_out_before_it_starts(capsys):
    from ui import jobs, tab_compare

    jobs.submitted(tab_compare.VIEW)(Session)  # the click, queued behind another job
    jobs.stop_handler(tab_compare.VIEW, "comparison")(Session)
    assert "stopped: it will not run" in capsys.readouterr().out  # gr.Info outside a page prints
    updates = list(jobs.queued(tab_compare.VIEW, tab_compare.run)(PROMPT, "aligned", "", request=Session))
    assert updates[-1][4] == tab_compare.STOPPED
    # the next click runs as usual
    jobs.submitted(tab_compare.VIEW)(Session)
    assert last(jobs.queued(tab_compare.VIEW, tab_compare.run)(PROMPT, "aligned", "", request=Session))[0] is not None


def test_models_key_changes_with_either_source(tmp_path, monkeypatch):
    key = models.key()
    monkeypatch.setattr(models, "_configured", {"mamba": str(tmp_path), "gpt2": models.source("gpt2")})
    other_mamba = models.key()
    monkeypatch.setattr(models, "_configured", {"mamba": models.source("mamba"), "gpt2": str(tmp_path)})
    assert len({key, other_mamba, models.key()}) == 3


def test_examples_cache_under_the_models_key(monkeypatch):
    import gradio as gr

    from ui import examples

    with gr.Blocks():
        box, out = gr.Textbox(), gr.Textbox()
        block = examples.cached([["a"]], inputs=box, outputs=out, fn=str.upper)
    assert block.cached_folder.parent.name == f"models-{models.key()}"
    assert block.cached_file.parent == block.cached_indices_file.parent == block.cached_folder


def test_startup_check_reports_both_missing_models_with_the_flag_fix(monkeypatch, capsys):
    from ui import __main__ as cli

    monkeypatch.setattr(models, "_configured", {"mamba": "/nowhere/mamba", "gpt2": "/nowhere/gpt2"})
    statuses = cli.startup()
    printed = capsys.readouterr().out
    assert [s.role for s in statuses if s.problem] == ["mamba", "gpt2"]
    for role, var in (("mamba", "MAMBA_MODEL"), ("gpt2", "GPT2_MODEL")):
        assert f"--{role} DIR" in printed and f"{var}=DIR" in printed
    banner = models.banner(statuses)
    assert "--mamba DIR" in banner and "--gpt2 DIR" in banner and "load_model" not in banner + printed


def test_startup_check_lists_what_loaded(capsys):
    from ui import __main__ as cli

    statuses = cli.startup()
    assert all(s.problem is None for s in statuses)
    assert "mamba: loaded" in capsys.readouterr().out
    assert models.banner(statuses) == ""


def test_compare_prompt_is_prefilled_with_the_ioi_sentence():
    from ui import tab_compare

    assert tab_compare.PROMPT == "When Mary and John went to the store, John gave a drink to"


def test_distributions_after_an_example_compute_the_compare_tabs_prompt():
    from ui import tab_distributions

    ridgelines, table, flat, comparison = last(tab_distributions.show(None, PROMPT, "aligned"))
    assert comparison.prompt == PROMPT
    assert "store" in " ".join(table["token"])


def test_pattern_plot_marks_lock_in_and_frame_holds_p_of_the_next_token():
    import numpy as np

    from compare import compare

    from ui import tab_patterns

    ids = tab_patterns.pattern(tab_patterns.cycle_ids("periodic", "text", "cat dog", models.get("mamba")), 8)
    comparison = compare(ids, models.pair(), variant="aligned", progress=False)
    frame = tab_patterns.next_token_frame(comparison)
    run = comparison.runs["mamba"]
    expected = [run.probs[t, ids[(t + 1) % 2 if t < 7 else 6]] for t in range(8)]
    assert frame[frame["model"] == "mamba"]["P_next"].to_numpy() == pytest.approx(np.array(expected))
    plot = last(tab_patterns.run("periodic", "text", "cat dog", 8))[2]
    assert plot is not None and len(plot.axes) == 2


def test_dataset_preview_shows_every_column():
    import datasets_gen

    from ui import tab_datasets

    preview, _ = last(tab_datasets.run(["monotone"], 2, 0))
    built = datasets_gen.build(seed=0, suites=["monotone"], sizes={"monotone": 2},
                               tokenizers={r: models.get(r).tokenizer for r in models.MODELS})
    assert list(preview.columns) == list(built["monotone"].column_names)


def test_method_note_links_the_papers():
    from ui import app

    for link in ("arxiv.org/abs/2312.00752", "arxiv.org/abs/2211.00593", "K = L ÷ |mean(L)|", "logistic"):
        assert link in app.METHOD


def test_compare_takes_any_two_or_three_models_by_name(tiny_dirs, tiny):
    import torch

    from ui import tab_compare

    dirs, refs = tiny_dirs
    pythia = str(dirs["pythia"])
    table, _, _, _, summary, comparison = last(tab_compare.run(PROMPT, "aligned", "", "auto", ["mamba", pythia, "gpt2"]))
    assert list(comparison.runs) == ["mamba", "pythia", "gpt2"]
    ids = tiny[0]["pythia"].encode(PROMPT)
    with torch.no_grad():
        expected = tiny[0]["pythia"].decode_tokens(refs["pythia"](torch.tensor([ids])).logits[0, :, :64].argmax(-1).tolist())
    assert table["pythia prediction"].tolist() == expected
    # the tiny checkpoints ship one tokenizer, so the summary says so for both others
    assert summary.count("reads mamba's tokenizer") == 2


def test_patterns_take_the_picked_models_the_first_one_s_tokenizer_builds_the_pattern(tiny_dirs, tiny):
    import pandas as pd
    import torch

    from ui import tab_patterns

    dirs, refs = tiny_dirs
    pythia = str(dirs["pythia"])
    preview, lock_in, _, table = last(tab_patterns.run("periodic", "text", "cat dog", 8, [pythia, "mamba", "gpt2"]))
    ids = tiny[0]["pythia"].encode("cat dog") * 4
    assert preview["pythia id"].tolist() == ids
    assert {"mamba aligned ids", "gpt2 aligned ids"} <= set(preview.columns)
    assert lock_in["model"].tolist() == ["pythia", "mamba", "gpt2"]
    # lock-in by hand: the first position after which every argmax continues the cycle
    with torch.no_grad():
        argmax = refs["pythia"](torch.tensor([ids])).logits[0, :, :64].argmax(-1).tolist()
    follows = [argmax[t] == ids[(t + 1) % 2] for t in range(len(ids))]
    expected = next((t for t in range(len(ids)) if all(follows[t:])), None)
    got = lock_in.set_index("model").loc["pythia", "lock-in position"]
    assert (None if pd.isna(got) else int(got)) == expected
    assert table["pythia prediction"].tolist() == tiny[0]["pythia"].decode_tokens(argmax)


@pytest.mark.parametrize("names", [["mamba"], ["mamba", "gpt2", "mamba-130m", "gpt2-medium"]])
def test_compare_refuses_one_model_or_more_than_three(names):
    from ui import tab_compare

    with pytest.raises(gr.Error, match="pick two or three models"):
        last(tab_compare.run(PROMPT, "aligned", "", "auto", names))  # checked where the models load, in the job


def test_noise_tab_sweeps_a_pythia_picked_by_path(tiny_dirs):
    from ui import tab_noise

    pythia = str(tiny_dirs[0]["pythia"])
    picker = tab_noise.pick_model(pythia)
    offered = [value for _, value in picker.choices]
    assert picker.value == "resid_post" and "q" in offered and "h" not in offered  # the family's, not Mamba's
    *_, (df, _) = last(tab_noise.run(**{**NOISE, "model_name": pythia}))
    assert set(df["model"]) == {"pythia"} and df["layer"].unique().tolist() == [0, 1]


def test_stop_handler_stops_only_the_sessions_running_job(monkeypatch):
    import threading

    from ui import jobs
    told = []
    monkeypatch.setattr(jobs.gr, "Info", told.append)
    stop_sweep = jobs.stop_handler("noise", "sweep")
    stop_sweep(Session)  # nothing running: the user is told, nothing is set
    assert told == ["No sweep of yours is running or waiting."]
    started, release = threading.Event(), threading.Event()

    def work(progress, stop):
        started.set()
        release.wait(5)
        return stop.is_set()

    job = jobs.run(work, tick=None, key=jobs.session_key(Session, "noise"))
    next(job)
    started.wait(5)
    jobs.stop_handler("patching", "patching")(Session)  # another view's Stop leaves this job alone
    stop_sweep(Session)
    release.set()
    with pytest.raises(StopIteration) as done:
        while True:
            next(job)
    assert done.value.value is True
    assert told == ["No sweep of yours is running or waiting.", "No patching of yours is running or waiting."]


def _held_until_stop(engine, started):
    """`engine` that first waits for its stop (as a long run would be busy), then runs as itself."""
    def held(*args, stop, **kwargs):
        started.set()
        stop.wait(5)
        return engine(*args, stop=stop, **kwargs)
    return held


def test_compare_stop_shows_a_note_and_the_sessions_next_run_completes(monkeypatch):
    import threading

    from ui import jobs, tab_compare

    started = threading.Event()
    monkeypatch.setattr(tab_compare, "compare", _held_until_stop(tab_compare.compare, started))
    stream = tab_compare.run(PROMPT, "aligned", "", request=Session)
    next(stream)
    assert started.wait(5)
    assert jobs.request_stop(Session, tab_compare.VIEW)  # what the Stop button does
    table, trajectories, cross, files, summary, comparison = last(stream)
    assert (table, trajectories, cross, files) == (None, None, None, None)
    assert summary.startswith("**Stopped**") and comparison == gr.skip()  # the last finished one stays
    monkeypatch.undo()
    table, *_, comparison = last(tab_compare.run("cat dog", "native", "", request=Session))
    assert comparison.prompt == "cat dog" and table["mamba token"].tolist() == ["cat", "dog"]


def test_compare_stop_while_the_figures_are_drawn_shows_only_the_note(monkeypatch):
    from ui import jobs, tab_compare

    results = tab_compare.results

    def stopped_while_drawn(*args):
        jobs.request_stop(Session, tab_compare.VIEW)  # the models are done; the figures take seconds
        return results(*args)

    monkeypatch.setattr(tab_compare, "results", stopped_while_drawn)
    *outputs, comparison = last(tab_compare.run(PROMPT, "aligned", "", request=Session))
    assert outputs == [None, None, None, None, tab_compare.STOPPED] and comparison == gr.skip()


def test_patterns_stop_says_so_and_shows_nothing(monkeypatch):
    import threading

    from ui import jobs, tab_patterns

    told, started = [], threading.Event()
    monkeypatch.setattr(tab_patterns.gr, "Info", told.append)
    monkeypatch.setattr(tab_patterns, "compare", _held_until_stop(tab_patterns.compare, started))
    stream = tab_patterns.run("periodic", "text", "cat dog", 8, request=Session)
    next(stream)
    assert started.wait(5)
    assert jobs.request_stop(Session, tab_patterns.VIEW)
    assert last(stream) == (None, None, None, None)
    assert len(told) == 1 and told[0].startswith("Stopped before the models finished")


def test_datasets_stop_between_suites_offers_those_built(monkeypatch):
    import datasets_gen

    from ui import jobs, tab_datasets

    told, build = [], datasets_gen.build

    def stopped_after_one_suite(**kwargs):
        built = build(**kwargs)
        jobs.request_stop(Session, tab_datasets.VIEW)  # Stop pressed while the first suite builds
        return built

    monkeypatch.setattr(tab_datasets.gr, "Info", told.append)
    monkeypatch.setattr(datasets_gen, "build", stopped_after_one_suite)
    preview, files = last(tab_datasets.run(["monotone", "repeated_random"], 2, 0, request=Session))
    assert preview["suite"].tolist() == ["monotone", "monotone"]
    assert len(files) == 1 and "monotone" in files[0] and files[0].endswith(".parquet")
    assert told == ["Stopped after 1 of 2 suites: the preview and the files hold monotone."]


def test_no_stop_cancels_a_run_and_run_clicks_wait_for_the_running_one():
    """Gradio's cancels= reached the session's next run of a button and dropped its click (see ui.jobs)."""
    from ui import app

    demo = app.build_app()
    assert not any(fn.cancels for fn in demo.fns.values())
    runs = {fn.fn.__module__: fn.trigger_mode for fn in demo.fns.values() if getattr(fn.fn, "__name__", "") == "run"}
    tabs = ("compare", "patterns", "lens", "datasets", "noise", "channels", "patching", "report", "tokenizers")
    assert runs == {f"ui.tab_{tab}": "always_last" for tab in tabs}


def test_channel_stop_note_counts_each_axis_in_words():
    import pandas as pd

    from ui.tab_channels import stopped_note

    df = pd.DataFrame({"axis": ["d_in"] * 3, "channel": [0, 1, 2]})
    assert stopped_note(df, {"d_in": 1536, "n": 16}) == ("**Stopped**: ranked 3 of 1536 d_in indices and 0 of 16 n "
                                                        "indices; the bars, table and files hold those only.")
    assert stopped_note(df.iloc[:0], {"d": 32}).startswith("**Stopped**: ranked 0 of 32 d indices;")


def test_toasts_show_code_spans_as_code_not_backticks():
    @limits.shown_to_user
    def refuses():
        raise ValueError("start the app with `python -m ui --mamba DIR` <now>")

    with pytest.raises(gr.Error) as info:
        refuses()
    assert "`" not in info.value.message
    assert "<code>python -m ui --mamba DIR</code> &lt;now&gt;" in info.value.message


def test_no_table_shows_placeholder_headers_before_a_run():
    from ui.app import build_app

    tables = [b for b in build_app().blocks.values() if isinstance(b, gr.Dataframe)]
    assert len(tables) >= 10
    for table in tables:
        assert table.value["headers"] != ["1", "2", "3"], table.elem_id
        assert "yet" in table.value["headers"][0], table.elem_id


def test_distributions_stop_stops_the_comparison(monkeypatch):
    from compare import compare

    from ui import jobs, tab_distributions

    def stopped_at_once(*args, stop, **kwargs):
        jobs.request_stop(Session, tab_distributions.VIEW)
        return compare(*args, stop=stop, **kwargs)

    monkeypatch.setattr(tab_distributions, "compare", stopped_at_once)
    updates = list(tab_distributions.show(None, "cat dog cat", "aligned", request=Session))
    assert all(u == jobs.skips(4) for u in updates)  # nothing shown, nothing stored: the Stop info only


def test_ui_readme_lists_every_tab():
    from pathlib import Path

    from ui.app import build_app

    readme = (Path(__file__).resolve().parents[1].parent / "ui" / "README.md").read_text()
    rows = {line.split("|")[1].strip() for line in readme.splitlines() if line.startswith("| ")}
    tabs = {b.label for b in build_app().blocks.values() if isinstance(b, gr.Tab)}
    assert len(tabs) >= 8 and tabs <= rows, tabs - rows


def test_every_job_releases_memory_when_it_ends(monkeypatch):
    import threading

    from ui import jobs

    released = threading.Event()
    monkeypatch.setattr(jobs, "release_memory", released.set)
    monkeypatch.setattr(jobs, "RELEASE_DELAY", 0.05)
    list(jobs.run(lambda progress, stop: 7, tick=None))
    assert released.wait(2.0)


def test_memory_is_released_after_the_reply_not_during_it(monkeypatch):
    import threading
    import time

    from ui import jobs

    released = threading.Event()
    monkeypatch.setattr(jobs, "release_memory", released.set)
    monkeypatch.setattr(jobs, "RELEASE_DELAY", 0.5)
    ended = time.monotonic()
    list(jobs.run(lambda progress, stop: 7, tick=None))
    assert not released.wait(0.3)  # the reply's figures are encoded in this window
    assert released.wait(2.0) and time.monotonic() - ended >= 0.5


def test_release_memory_trims_the_heap_with_glibc():
    import ctypes.util

    from ui import jobs

    if not ctypes.util.find_library("c"):
        pytest.skip("no C library to trim")
    jobs.release_memory()  # gc and malloc_trim: must not raise
    assert jobs.LIBC is not None and hasattr(jobs.LIBC, "malloc_trim")


def test_noise_tab_names_each_layers_kind_of_a_hybrid(tiny_dirs, tiny):
    from ui import tab_noise

    granite = str(tiny_dirs[0]["granite_hybrid"])
    # Granite's config layer_types (transformers 5 writes "mamba" / "attention" as linear / full attention)
    kinds = [{"linear_attention": "ssm", "full_attention": "attention"}[t]
             for t in tiny[1]["granite_hybrid"].config.layer_types]
    note, *_, picker, (df, fits) = last(tab_noise.run(**{**NOISE, "model_name": granite}))
    assert "granite_hybrid layers: " + ", ".join(f"{l} {k}" for l, k in enumerate(kinds)) in note
    assert picker.choices == [(f"{l} · {k}", l) for l, k in enumerate(kinds)]
    assert fits["kind"].tolist() == kinds


def test_noise_tab_says_every_layer_of_a_single_kind_model_is_that_kind():
    from ui import tab_noise

    note, *_, picker, _ = last(tab_noise.run(**NOISE))
    assert "gpt2: every layer swept is attention" in note
    assert [label for label, _ in picker.choices] == ["0", "1"]


def test_compare_figures_are_vega_lite_specifications_that_gr_plot_sends_unchanged(compared):
    import json

    from compare.figures import vega

    plot = gr.Plot()
    for figure in compared[1:3]:
        sent = plot.postprocess(figure)  # a Gradio change here would send nothing the page can draw
        assert sent.type == "altair" and json.loads(sent.plot)["$schema"] == vega.SCHEMA
    comparison = compared[5]
    values = json.loads(compared[1].plot)["data"]["values"]
    frame = comparison.tracked_frame()
    assert [(v["model"], v["tracked"], v["position"], v["P"]) for v in values] == [
        (r.model, r.tracked, r.position, pytest.approx(r.P)) for r in frame.itertuples()]
    mamba = comparison.runs["mamba"].tokens
    assert [v["label"] for v in values if v["model"] == "mamba" and v["tracked"] == "Mary"] == [
        f"{t}: '{token}'" for t, token in enumerate(mamba)]
    cross = json.loads(compared[2].plot)["hconcat"][0]["data"]["values"]
    assert [v["js"] for v in cross] == pytest.approx(comparison.cross["js"].tolist())
