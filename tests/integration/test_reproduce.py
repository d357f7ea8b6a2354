"""`compare.reproduce` / `python -m compare reproduce`: the report's files, its numbers against independent
computations, a self-contained page that escapes token text, atomic writes, the CLI, the errata checks."""
from __future__ import annotations

import html
import json
import re
import sys
import threading

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from compare import Stopped, load_model, load_tokenizer
from compare.analyses import noise
from compare.__main__ import main
from compare.reproduce import SECTIONS, errata, render, thesis_report
from compare.reproduce.plan import IOI, LITHUANIAN, MARY, QUICK
from compare.reproduce.report import Number, Report, Section
from compare.reproduce.sweeps import noisy_rows
from conftest import HOSTILE, assert_literal, build_gpt2, build_mamba_hf, renders, shared_tokenizer, tiny_tokenizer

package = sys.modules["compare.reproduce"]


@pytest.fixture(scope="module")
def report(tiny_dirs, tmp_path_factory):
    """One quick report on the tiny models, loaded from their folders through the public loader."""
    dirs, _ = tiny_dirs
    out = tmp_path_factory.mktemp("reproduce") / "report"
    seen, drawn = [], {}
    writing = sys.modules["compare.reproduce.writing"]
    render_png = writing.png

    def png(figure):  # every figure the report draws, kept for the figure checks
        drawn[id(figure)] = figure
        return render_png(figure)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(writing, "png", png)
        path = thesis_report(out, models=(str(dirs["mamba"]), str(dirs["gpt2"])), quick=True, device="cpu",
                         progress=lambda done, total: seen.append((done, total)))
    data = json.loads((path / "report.json").read_text(encoding="utf-8"))
    numbers = {(s["key"], n["key"]): n for s in data["sections"] for n in s["numbers"]}
    return {"path": path, "json": data, "numbers": numbers, "progress": seen, "dirs": dirs,
            "figures": list(drawn.values()),
            "html": (path / "report.html").read_text(encoding="utf-8")}


def value(report, section, key):
    return report["numbers"][(section, key)]["value"]


@pytest.fixture(scope="module")
def models(report):
    return {name: load_model(report["dirs"][name], device="cpu") for name in ("mamba", "gpt2")}


# --- files --------------------------------------------------------------------------------------

def test_writes_the_page_the_numbers_the_figures_and_the_frames(report):
    path, data = report["path"], report["json"]
    assert (path / "report.html").is_file() and (path / "report.json").is_file()
    assert [s["number"] for s in data["sections"]] == list(range(1, 11))
    for s in data["sections"]:
        for relative in s["figures"] + s["frames"]:
            assert (path / relative).is_file(), relative
    assert len(list((path / "figures").glob("*.png"))) >= 9
    assert pd.read_parquet(path / "data" / "noise_sweeps.parquet")["hit"].dtype == bool


def test_progress_counts_every_step_to_the_end(report):
    done = [d for d, _ in report["progress"]]
    assert done == sorted(done) and report["progress"][-1][0] == report["progress"][-1][1]


def test_every_number_has_a_definition_and_every_row_names_known_numbers(report):
    for s in report["json"]["sections"]:
        keys = {n["key"] for n in s["numbers"]}
        assert all(n["definition"] for n in s["numbers"]), s["key"]
        for row in s["rows"]:
            assert set(row["measured"]) <= keys and row["thesis"]


def test_header_names_sources_versions_seed_dtype_and_the_weights_caveat(report):
    header, dirs = report["json"]["header"], report["dirs"]
    assert [m["source"] for m in header["models"]] == [str(dirs["mamba"]), str(dirs["gpt2"])]
    assert header["seed"] == 0 and header["plan"]["name"] == "quick"
    assert {m["dtype"] for m in header["models"]} == {"float32"}
    assert {"mamba-gpt2-compare", "torch", "transformers"} <= set(header["versions"])
    assert "weights that were run" in report["html"] and str(dirs["mamba"]) in report["html"]


# --- numbers against independent computations ----------------------------------------------------

def test_token_count_is_the_tokenizers_own(report):
    tok = load_tokenizer(report["dirs"]["gpt2"])
    assert value(report, "token_ids", "n_tokens[IOI sentence|gpt2]") == len(tok.encode(IOI, add_special_tokens=False))


def test_vocabulary_length_correlation_matches_numpy(report):
    tok = load_tokenizer(report["dirs"]["mamba"])
    ids = np.arange(len(tok))
    lengths = [len(tok.decode([i], clean_up_tokenization_spaces=False)) for i in ids]
    expected = np.corrcoef(np.log1p(ids), lengths)[0, 1]
    assert value(report, "id_vs_length", "r_logid_len[vocabulary|mamba]") == pytest.approx(expected, abs=1e-9)


def test_logit_id_correlation_and_p_of_mary_match_a_plain_forward(report, models):
    handle = models["mamba"]
    L = handle.logits(handle.encode(IOI))[0].double().numpy()
    r = [np.corrcoef(np.arange(L.shape[1]), row)[0, 1] for row in L]
    assert value(report, "rows_of_l", "median_r_id_L[mamba]") == pytest.approx(np.median(r), abs=1e-6)
    P = np.exp(L - L.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    mary = handle.single_token(MARY)
    assert value(report, "trajectories", "p_mary[mamba|T=2]") == pytest.approx(P[2, mary], rel=1e-5)


def test_variance_slope_matches_a_numpy_fit_of_k(report, models):
    handle = models["gpt2"]
    L = handle.logits(handle.encode(IOI))[0].double().numpy()
    K = L / np.abs(L.mean(1, keepdims=True))
    slope = np.polyfit(np.arange(len(K)), K.var(1), 1)[0]
    assert value(report, "k_distributions", "variance_slope[vocab|gpt2]") == pytest.approx(slope, rel=1e-4)


def test_layer_trend_is_scipys_spearman_of_the_saved_sweep(report):
    sweeps = pd.read_parquet(report["path"] / "data" / "noise_sweeps.parquet")
    main = sweeps[(sweeps["model"] == "mamba") & (sweeps["distribution"] == "gaussian") & (sweeps["scale"] == "absolute")]
    rate = main.groupby("layer")["hit"].mean()
    expected = stats.spearmanr(rate.index, rate.to_numpy()).statistic if rate.nunique() > 1 else np.nan
    got = value(report, "noise", "spearman_layer_hit[mamba]")
    assert (np.isnan(expected) and got is None) or got == pytest.approx(expected)


def test_lock_in_matches_the_argmax_of_a_plain_forward(report, models):
    handle = models["mamba"]
    ids = ([42, 69 % handle.vocab_size] * QUICK.periodic_length)[: QUICK.periodic_length]
    predicted = handle.logits(ids)[0].argmax(-1).numpy()
    expected = ids[1:] + [ids[-2]]
    wrong = np.flatnonzero(predicted != np.array(expected))
    lock = 0 if not len(wrong) else None if wrong[-1] == len(ids) - 1 else int(wrong[-1]) + 1
    assert value(report, "periodic", "lock_in[(42, 69)|mamba]") == lock


def test_noisy_rows_by_trace_equal_the_sweep_engines_ray(models):
    handle = models["mamba"]
    rows = noisy_rows(handle, handle.encode(IOI), "h", 1, 0.7, 3)
    engine = noise.noisy_logits(IOI, model=handle, target=MARY, component="h", layers=[1], level=0.7, seed=3,
                                draws="ray")
    np.testing.assert_allclose(rows[-1], engine[engine["run"] == "noisy"]["logit"].to_numpy(), rtol=1e-4, atol=1e-4)


# --- the page ---------------------------------------------------------------------------------

def test_page_has_no_external_reference(report):
    page = report["html"]
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", page)
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    assert page.count('src="data:image/png;base64,') == sum(len(s["figures"]) for s in report["json"]["sections"])


def test_page_escapes_the_tiny_vocabularys_special_tokens(report):
    assert "&lt;unk&gt;" in report["html"] and "<unk>" not in report["html"]


def test_render_escapes_hostile_token_text():
    hostile = ["<script>alert(1)</script>", "a & b", "$x^2$", "🐍", "日本語", '" onload="x']
    s = Section(1, "t", "<b>title</b>", "Fig. <1>")
    numbers = [s.add(f"n{i}", text, text, "d") for i, text in enumerate(hostile)]
    s.row("<i>what</i>", "<u>thesis</u>", numbers)
    s.table("tokens", pd.DataFrame({"token": hostile}), "d")
    s.notes.append("<hr>")
    header = {"title": "<t>", "statement": "<s>", "run": {}, "seed": 0, "plan": {}, "models": [], "versions": {}}
    page = render.page(Report(header, [s], []), {})
    for text in hostile + ["<b>title</b>", "<i>what</i>", "<hr>"]:
        assert html.escape(text) in page
    assert "<script>" not in page and "<b>title" not in page and "<hr>" not in page
    assert '" onload="x' not in page


# --- atomic -----------------------------------------------------------------------------------

def _leftovers(folder):
    return [p.name for p in folder.iterdir()]


def test_an_error_mid_run_leaves_no_folder(tiny_dirs, tmp_path, monkeypatch):
    def broken(ctx):
        raise RuntimeError("boom")

    monkeypatch.setattr(package, "SECTIONS", SECTIONS[:2] + (broken,))
    dirs, _ = tiny_dirs
    with pytest.raises(RuntimeError, match="boom"):
        thesis_report(tmp_path / "r", models=(str(dirs["mamba"]), str(dirs["gpt2"])), quick=True, device="cpu")
    assert _leftovers(tmp_path) == []


def test_an_error_while_writing_leaves_no_folder_and_no_staging(tiny_dirs, tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(package, "SECTIONS", SECTIONS[:1])
    monkeypatch.setattr(render, "page", broken)
    dirs, _ = tiny_dirs
    with pytest.raises(RuntimeError, match="disk full"):
        thesis_report(tmp_path / "r", models=(str(dirs["mamba"]), str(dirs["gpt2"])), quick=True, device="cpu")
    assert _leftovers(tmp_path) == []


def test_a_stop_raises_and_writes_nothing(tiny_dirs, tmp_path):
    dirs, _ = tiny_dirs
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        thesis_report(tmp_path / "r", models=(str(dirs["mamba"]), str(dirs["gpt2"])), quick=True, stop=stop)
    assert _leftovers(tmp_path) == []


def test_a_hub_id_model_name_is_written_as_one_file_name(tmp_path):
    # A model loaded by Hub id is named "owner/name"; the channel figure is keyed by model name,
    # and its "/" used to make a folder the write could not find, after the whole report had run.
    from matplotlib.figure import Figure

    from compare.reproduce import writing

    s = Section(9, "channels", "t", "w")
    s.figure("bars_state-spaces/mamba-130m-hf", Figure(), "c")
    header = {"title": "t", "statement": "s", "run": {}, "seed": 0, "plan": {}, "models": [], "versions": {}}
    path = writing.write(Report(header, [s], []), tmp_path / "r")
    listed = json.loads((path / "report.json").read_text(encoding="utf-8"))["sections"][0]["figures"]
    assert listed == ["figures/channels_bars_state-spaces--mamba-130m-hf.png"]
    assert [p.name for p in (path / "figures").iterdir()] == ["channels_bars_state-spaces--mamba-130m-hf.png"]


def test_a_numpy_integer_seed_is_accepted(tiny_dirs, tmp_path):
    dirs, _ = tiny_dirs
    stop = threading.Event()
    stop.set()  # past the argument checks, before any section runs
    with pytest.raises(Stopped):
        thesis_report(tmp_path / "r", models=(str(dirs["mamba"]), str(dirs["gpt2"])), quick=True, seed=np.int64(1),
                  stop=stop)


def test_a_foreign_folder_is_refused_before_any_work(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="out: .* already exists"):
        thesis_report(tmp_path / "r", models=("/nowhere/a", "/nowhere/b"), overwrite=False)
    with pytest.raises(FileExistsError, match="not a result of this package"):
        thesis_report(tmp_path / "r", models=("/nowhere/a", "/nowhere/b"), overwrite=True)
    assert (tmp_path / "r" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("kw, needle", [({"seed": -1}, "seed: must be an integer"), ({"quick": "yes"}, "quick:"),
                                        ({"seed": 1.0}, "seed: must be an integer"),
                                        ({"models": ("a",)}, "models: must be two"), ({"progress": 3}, "progress:"),
                                        ({"trials": 0}, "trials: must be an integer ≥ 1"),
                                        ({"noise_levels": 1.5}, "noise_levels: must be an integer ≥ 2"),
                                        ({"thesis_text": "/nowhere.txt"}, "thesis_text: no such file")])
def test_bad_arguments_name_the_argument(tmp_path, kw, needle):
    with pytest.raises((TypeError, ValueError, OSError), match=needle):
        thesis_report(tmp_path / "r", **kw)


# --- CLI --------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, needle", [([], "--out"), (["--out", "x", "--seed", "-2"], "--seed"),
                                          (["--out", "x", "--seed", "one"], "--seed"),
                                          (["--out", "x", "--bogus"], "--bogus"),
                                          (["--out", "x", "--trials", "0"], "--trials"),
                                          (["--out", "x", "--noise-levels", "1"], "--noise-levels")])
def test_cli_bad_arguments_exit_2_naming_the_argument(capsys, args, needle):
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", *args])
    assert exit_info.value.code == 2 and needle in capsys.readouterr().err


def test_cli_an_unloadable_model_exits_2_naming_the_flag(tmp_path, capsys):
    assert main(["reproduce", "--out", str(tmp_path / "r"), "--mamba", str(tmp_path / "none"), "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --mamba:") and not (tmp_path / "r").exists()


def test_cli_a_bad_gpt2_with_the_default_mamba_names_gpt2(tmp_path, capsys):
    # the default --mamba is a Hub alias, unreachable offline: its fetch must not hide --gpt2's error
    assert main(["reproduce", "--out", str(tmp_path / "r"), "--gpt2", str(tmp_path / "none"), "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --gpt2:") and "no such directory" in err and "Hub" not in err


def test_cli_warns_when_the_roles_are_swapped_before_loading(tiny_dirs):
    from compare.reproduce.cli import check_roles

    dirs, _ = tiny_dirs
    assert check_roles(str(dirs["mamba"]), str(dirs["gpt2"])) == []
    swapped = check_roles(str(dirs["gpt2"]), str(dirs["mamba"]))
    assert len(swapped) == 1 and "swapped" in swapped[0]
    one = check_roles(str(dirs["gpt2"]), "gpt2")
    assert len(one) == 1 and one[0].startswith("--mamba:") and "not an SSM" in one[0]
    with pytest.raises(Exception, match="--mamba: unknown model alias 'mamba-13m'"):
        check_roles("mamba-13m", "gpt2")


def test_cli_writes_a_quick_report(tiny_dirs, tmp_path, capsys):
    dirs, _ = tiny_dirs
    assert main(["reproduce", "--out", str(tmp_path / "r"), "--mamba", str(dirs["mamba"]), "--gpt2", str(dirs["gpt2"]),
                 "--quick", "--seed", "3", "--device", "cpu", "--quiet"]) == 0
    assert "report.html" in capsys.readouterr().out
    assert json.loads((tmp_path / "r" / "report.json").read_text())["header"]["seed"] == 3


# --- errata -----------------------------------------------------------------------------------

def test_errata_on_other_tokenizers_check_only_the_text(report):
    # the tokenizer checks are not applicable on the tiny models; eq. 6 and Fig. 12 read only the text
    statuses = {n["key"]: n["value"] for n in report["json"]["sections"][9]["numbers"] if n["key"].startswith("status")}
    assert statuses == {"status[fig10_mary_ids]": errata.NOT_APPLICABLE, "status[fig19_caption]": errata.NOT_APPLICABLE,
                        "status[eq9_token_count]": errata.NOT_APPLICABLE, "status[eq6_divisor]": errata.CONFIRMED,
                        "status[fig12_caption]": errata.CONFIRMED}
    why = next(n for n in report["json"]["sections"][9]["numbers"] if n["key"] == "found[eq9_token_count]")
    assert "not GPT-NeoX-20B" in why["value"]


# Fragments written as the thesis's text writes them (LaTeX, captions "N pav.:"), for checks fed other facts
FIG10_TEXT = "10 pav.: ... jo kairėje ID_{GPT2} = %d, o dešinėje ID_{gpt-neox-20b} = %d."
FIG12_TEXT = "Mamba K skirstiniuose rastas „gauburiukas“ (12, 13 pav.), ...\n12 pav.: Įvestis; Modelis %s."
EQ9_TEXT = ("$$\\begin{array}{c} \\text{„%s“} \\\\ \\downarrow \\\\ [10683, \\dots] \\end{array}$$\n"
            "tas pats teksto vienetas (<123>, 10683) pasikartojantis %d kartų.")
FIG19_TEXT = ("19 pav.: Kairėje įvestis $[4200, 6660, \\dots] = [<\\text{%s}>, <%s>, \\dots]$.\n"
              "21 pav.: Kairėje išvestis $[4200, 6660, \\dots] = [<\\text{Mon}>, <%s>, \\dots]$.\n")


def test_errata_verdicts_follow_the_text_they_are_fed():
    neox, gpt2 = shared_tokenizer("gpt-neox-20b"), shared_tokenizer("gpt2")
    # Fig. 10: the caption's IDs against the tokenizers' (' Mary' is 6393 in GPT-NeoX, 5335 in GPT-2)
    assert errata.mary_ids(neox, gpt2, FIG10_TEXT % (6393, 5335)).status == errata.CONFIRMED
    assert errata.mary_ids(neox, gpt2, FIG10_TEXT % (5335, 6393)).status == errata.CORRECT
    # Fig. 12: the caption's model against the text's
    assert errata.fig12_caption(FIG12_TEXT % "GPT-2").status == errata.CONFIRMED
    assert errata.fig12_caption(FIG12_TEXT % "Mamba").status == errata.CORRECT
    # eq. 9: "123" × 16 is 16 GPT-NeoX tokens
    assert errata.repeated_count(neox, EQ9_TEXT % ("123" * 16, 14)).status == errata.CONFIRMED
    assert errata.repeated_count(neox, EQ9_TEXT % ("123" * 14, 14)).status == errata.CORRECT
    # Fig. 19: 'Mon' for ' Mon' is the thesis's convention; '],' for ']),' is uncertain where Fig. 21 writes ']),'
    check = errata.fig19_caption(neox, FIG19_TEXT % ("Mon", "],", "]\\),"))
    assert check.found["verdict_per_id"][4200] == errata.CORRECT
    assert check.found["verdict_per_id"][6660] == errata.UNCERTAIN
    alone = FIG19_TEXT.split("21 pav")[0]  # Fig. 19's caption only: no other place writes the IDs
    assert errata.fig19_caption(neox, alone % ("Tue", "]),")).found["verdict_per_id"][4200] == errata.CONFIRMED
    assert errata.fig19_caption(neox, FIG19_TEXT % ("Mon", "],", "],")).found["verdict_per_id"][6660] == errata.CONFIRMED


def test_errata_on_the_thesis_text_and_the_real_tokenizers():
    text = errata.thesis_text()
    if text is None:
        pytest.skip("the thesis's text is not beside the project")
    neox, gpt2 = shared_tokenizer("gpt-neox-20b"), shared_tokenizer("gpt2")
    assert (errata.recognise(neox), errata.recognise(gpt2)) == ("gpt-neox-20b", "gpt2")
    mary = errata.mary_ids(neox, gpt2, text)
    assert mary.status == errata.CONFIRMED and mary.found["swapped"]
    assert mary.found["encoded"] == {"gpt2": [5335], "gpt-neox-20b": [6393]}
    fig19 = errata.fig19_caption(neox, text)
    assert fig19.status == errata.UNCERTAIN and fig19.found["decoded"] == {4200: " Mon", 6660: "]),", 582: "),"}
    assert fig19.found["verdict_per_id"] == {4200: errata.CORRECT, 6660: errata.UNCERTAIN, 582: errata.UNCERTAIN}
    count = errata.repeated_count(neox, text)
    assert count.status == errata.CONFIRMED and (count.found["tokens"], count.found["claimed"]) == (16, 14)
    eq6 = errata.eq6_divisor(text)
    assert eq6.status == errata.CONFIRMED and eq6.found["scale_of_K"] == pytest.approx(50280 / 50279)
    assert "negligible" in eq6.magnitude
    assert errata.fig12_caption(text).found == {"caption_model": "GPT-2", "text_model": "Mamba",
                                                "bump_positions_measured": None}


def test_a_number_value_is_written_as_standard_json():
    n = Number("k", "label", float("nan"), "d", {"x": np.float32(1.5)})
    assert json.loads(json.dumps(n.to_json())) == {"key": "k", "label": "label", "value": "nan", "definition": "d",
                                                   "n": None, "uncertainty": None, "parameters": {"x": 1.5}}


# --- a report on the real tokenizers ---------------------------------------------------------------

@pytest.fixture(scope="module")
def real_report(tmp_path_factory):
    """A quick report on tiny random models over the real GPT-NeoX and GPT-2 vocabularies, each
    folder holding its real tokenizer (skips without them), and the transformers models."""
    neox, gpt2 = shared_tokenizer("gpt-neox-20b"), shared_tokenizer("gpt2")
    root = tmp_path_factory.mktemp("real_report")
    refs = {"mamba": build_mamba_hf(root / "mamba", vocab=50280, with_tokenizer=False),
            "gpt2": build_gpt2(root / "gpt2", vocab=50257, with_tokenizer=False)}
    neox.save_pretrained(root / "mamba")
    gpt2.save_pretrained(root / "gpt2")
    path = thesis_report(root / "report", models=(str(root / "mamba"), str(root / "gpt2")), quick=True, device="cpu")
    data = json.loads((path / "report.json").read_text(encoding="utf-8"))
    return {"numbers": {(s["key"], n["key"]): n for s in data["sections"] for n in s["numbers"]},
            "tokenizers": {"mamba": neox, "gpt2": gpt2}, "refs": refs}


def test_real_tokenizers_token_counts_and_the_ids_of_mary(real_report):
    for name, tok in real_report["tokenizers"].items():
        for label, text in (("IOI sentence", IOI), ("Lithuanian sentence", LITHUANIAN)):
            assert value(real_report, "token_ids", f"n_tokens[{label}|{name}]") == len(tok.encode(text, add_special_tokens=False))
    # the IDs the thesis' Fig. 10 caption swaps
    assert (value(real_report, "id_vs_length", "mary_id[mamba]"), value(real_report, "id_vs_length", "mary_id[gpt2]")) == (6393, 5335)
    assert value(real_report, "token_ids", "ioi_ids_equal_eq8") is True


def test_real_tokenizers_p_of_mary_matches_transformers_own_models(real_report):
    import torch

    for name, tok in real_report["tokenizers"].items():
        ids = tok.encode(IOI, add_special_tokens=False)
        with torch.no_grad():
            P = torch.softmax(real_report["refs"][name](torch.tensor([ids])).logits[0].double(), -1)
        mary = tok.encode(MARY, add_special_tokens=False)[0]
        for t in (2, 13):
            assert value(real_report, "trajectories", f"p_mary[{name}|T={t}]") == pytest.approx(P[t, mary].item(), rel=1e-4)


def test_real_tokenizers_vocabulary_length_correlation_matches_numpy(real_report):
    tok = real_report["tokenizers"]["gpt2"]
    ids = np.arange(len(tok))
    lengths = [len(tok.decode([i], clean_up_tokenization_spaces=False)) for i in ids]
    expected = np.corrcoef(np.log1p(ids), lengths)[0, 1]
    assert value(real_report, "id_vs_length", "r_logid_len[vocabulary|gpt2]") == pytest.approx(expected, abs=1e-9)


def test_real_tokenizers_every_erratum_is_checked_and_confirmed(real_report):
    # read by hand from the thesis's text and the real tokenizers: the swapped IDs of " Mary", "123" × 16,
    # eq. 6's off-by-one, Fig. 12's caption against §6.2; Fig. 19's '],' for ']),' may be the extraction's
    statuses = {key: n["value"] for (section, key), n in real_report["numbers"].items()
                if section == "errata" and key.startswith("status[")}
    assert statuses == {**{f"status[{check}]": errata.CONFIRMED for check in
                           ("fig10_mary_ids", "eq9_token_count", "eq6_divisor", "fig12_caption")},
                        "status[fig19_caption]": errata.UNCERTAIN}


# --- the figures the report adds -------------------------------------------------------------------

def test_thesis_figures_draw_hostile_tokens_literally():
    from compare.figures import thesis as thesis_figures

    rng = np.random.default_rng(0)
    tokens = list(HOSTILE[:5])
    K = {m: rng.normal(size=(5, 40)) for m in ("mamba", "gpt2")}
    P = {m: rng.dirichlet(np.ones(40), size=5) for m in K}
    fig = thesis_figures.vocabulary_trajectories(K, P, {m: 3 for m in K}, {m: tokens for m in K}, label="$")
    assert renders(fig)
    assert_literal(fig, ["'$' (ID 3)"])
    table = pd.DataFrame({"id": [3, 7], "token": ["$x^2$", "🐍"], "length": [5, 1]})
    fig = thesis_figures.id_length_scatter({"mamba": table}, {"mamba": table}, highlight="$x^2$")
    assert renders(fig)
    assert_literal(fig, ["'$x^2$' = 3"])


def test_curve_density_counts_every_curve_once_per_column():
    from matplotlib.figure import Figure

    from compare.figures.thesis import curve_density

    X = np.random.default_rng(1).normal(size=(4, 500))
    ax = Figure().subplots()
    curve_density(ax, X, samples=3, y_bins=50)
    counts = np.nan_to_num(np.asarray(ax.collections[0].get_array(), dtype=float).reshape(50, -1))
    assert counts.shape[1] == 3 * 3 + 1 and (counts.sum(axis=0) == 500).all()


# --- what ran ------------------------------------------------------------------------------------

def test_a_report_on_tiny_models_opens_with_the_banner_and_never_says_reproduced(report):
    header, page = report["json"]["header"], report["html"]
    assert "reproduced" not in header["title"].lower()
    title = re.search(r"<title>(.*?)</title>", page).group(1) + re.search(r"<h1>(.*?)</h1>", page).group(1)
    assert "reproduced" not in title.lower()
    assert page.index('id="banner"') < page.index('id="what-ran"') < page.index('id="section-1"')
    assert "No number below describes the thesis" in page and "does not model English" in page
    assert [m["models_english"] for m in header["models"]] == [False, False]
    assert all(m["thesis_checkpoint"].startswith("no:") for m in header["models"])


def test_header_names_parameters_and_a_digest_of_the_weights(report, models):
    import hashlib

    for m, name in zip(report["json"]["header"]["models"], ("mamba", "gpt2")):
        module = models[name].module
        assert m["parameters"] == sum(p.numel() for p in set(module.parameters()))
        h = hashlib.sha256()
        for key, t in sorted(module.state_dict().items()):
            h.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode() + t.contiguous().numpy().tobytes())
        assert m["weights_sha256"] == h.hexdigest()[:12]


def test_language_check_is_transformers_loss_against_a_hand_counted_unigram(models):
    from compare.reproduce import identity

    assert identity.unigram_entropy([1, 1, 2, 3]) == pytest.approx(-(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25)))
    handle = models["gpt2"]
    ids = handle.encode(identity.PARAGRAPH)
    import torch

    with torch.no_grad():  # transformers' logits over the real vocabulary (the LM head's padding rows dropped)
        logits = handle.module(torch.tensor([ids])).logits[0, :-1, : handle.vocab_size]
        expected = torch.nn.functional.cross_entropy(logits.double(), torch.tensor(ids[1:])).item()
    check = identity.language_check(handle)
    assert check.loss == pytest.approx(expected, rel=1e-5) and check.n_tokens == len(ids) - 1
    assert not check.models_english  # random weights


def test_the_thesis_checkpoint_is_recognised_only_by_name_and_shapes(models):
    from compare.reproduce import identity

    class Fake:
        family, n_layers, vocab_size, name = "mamba", 24, 50280, "mamba-130m"

    assert identity.thesis_checkpoint("mamba-130m", Fake(), 0)[0] == identity.THESIS
    assert identity.thesis_checkpoint("/some/dir", Fake(), 0)[0] == identity.SAME_SHAPES
    assert identity.thesis_checkpoint("mamba-130m", Fake(), 1)[0] == identity.OTHER  # in the GPT-2 role
    assert identity.thesis_checkpoint("mamba-130m", models["mamba"], 0)[0] == identity.OTHER


# --- how sure: n and an interval, test or spread beside every measured number ----------------------

SURE = re.compile(r"CI \[|p = |exact|over \d+ draws|one draw|standard error|not measured|no interval|not defined|"
                  r"no test|no layer fitted|trial")


def test_every_measured_number_states_n_and_an_interval_or_test_in_the_json_and_the_page(report):
    cells = re.findall(r'<table class="claims">.*?</table>', report["html"], flags=re.S)
    page_cells = [html.unescape(c) for table in cells for c in re.findall(r'<td class="value">(.*?)</td>', table,
                                                                         flags=re.S)]
    assert page_cells
    for s in report["json"]["sections"]:
        numbers = {n["key"]: n for n in s["numbers"]}
        for row in s["rows"]:
            for key in row["measured"]:
                n = numbers[key]
                assert isinstance(n["n"], int), (s["key"], key)
                assert n["uncertainty"] and SURE.search(n["uncertainty"]), (s["key"], key, n["uncertainty"])
    for cell in page_cells:
        for line in cell.split("<br>"):
            assert re.search(r"\(n = [\d,]+; ", line) and SURE.search(line), line


def test_interval_helpers_match_hand_computations():
    from compare.reproduce import uncertainty

    r, n = 0.782, 14  # Result 1's r over 14 tokens: the issue's hand value [0.43, 0.93]
    low, high = uncertainty.fisher_ci(r, n)
    z, half = np.arctanh(r), 1.959964 / np.sqrt(n - 3)
    assert (low, high) == pytest.approx((np.tanh(z - half), np.tanh(z + half)), abs=1e-6)
    assert (round(low, 2), round(high, 2)) == (0.43, 0.93)
    x = np.arange(14.0)
    y = np.random.default_rng(0).normal(size=14)
    _, _, p, text = uncertainty.slope(x, y)
    assert p == pytest.approx(stats.pearsonr(x, y).pvalue) and "p = " in text
    wilson = stats.binomtest(4, 10).proportion_ci(method="wilson")  # scipy's Wilson interval
    assert f"[{wilson.low:.2f}, {wilson.high:.2f}]" in uncertainty.binomial_ci(4, 10)


# --- figures a reader can read ----------------------------------------------------------------------

def _axes_with_data(ax) -> bool:
    return (any(len(line.get_xdata()) for line in ax.lines) or bool(ax.images) or bool(ax.patches)
            or any(len(c.get_offsets()) or c.get_array() is not None for c in ax.collections))


def _handle_visible(handle) -> bool:
    from matplotlib.collections import Collection
    from matplotlib.lines import Line2D

    alpha = handle.get_alpha()
    if alpha is not None and alpha < 0.3:
        return False
    if isinstance(handle, Line2D):
        line = handle.get_linestyle() not in ("None", "", " ", "none") and handle.get_linewidth() >= 0.8
        marker = handle.get_marker() not in (None, "None", "", " ", "none") and handle.get_markersize() >= 3
        return line or marker
    if isinstance(handle, Collection):
        sizes = handle.get_sizes()
        return len(sizes) == 0 or float(np.max(sizes)) >= 9
    return True


def test_every_report_figure_has_a_title_no_empty_axes_without_a_note_and_visible_legend_handles(report):
    figures = report["figures"]
    assert len(figures) == sum(len(s["figures"]) for s in report["json"]["sections"])
    for fig in figures:
        titles = [fig._suptitle.get_text() if fig._suptitle else ""] + [ax.get_title() for ax in fig.axes]
        assert any(t.strip() for t in titles), "a figure without a title"
        for ax in fig.axes:
            if ax.get_label() == "<colorbar>" or not ax.get_visible():
                continue
            assert _axes_with_data(ax) or ax.texts, f"{titles[0]!r}: an axes without data and without a note"
            legend = ax.get_legend()
            for handle in (legend.legend_handles if legend else []):
                assert _handle_visible(handle), f"{titles[0]!r}: legend handle {handle.get_label()!r} invisible"


def test_html_tables_keep_quotes_and_write_byte_tokens_as_escapes():
    s = Section(1, "t", "t", "w")
    s.table("tokens", pd.DataFrame({"tokens": [[" Mon", "]),"], "\ufffd"], "byte": ["\ufffd", "x"]}), "d")
    page = render.page(Report({"title": "t", "statement": "s", "run": {}, "seed": 0, "plan": {}, "models": [],
                               "versions": {}}, [s], []), {})
    assert html.escape("[' Mon', ']),']") in page
    assert "\ufffd" not in page and "\\ufffd" in page or "U+FFFD" in page


def test_byte_tokens_of_the_lithuanian_sentence_are_written_as_their_bytes():
    from compare.reproduce.tokens import byte_label

    tok = shared_tokenizer("gpt2")
    ids = tok.encode(LITHUANIAN, add_special_tokens=False)
    labels = [byte_label(tok, i, tok.decode([i])) for i in ids]
    assert "\ufffd" not in "".join(labels)
    # 'ė' is UTF-8 c4 97: GPT-2 splits it into ' \xc4' and '\x97'
    assert "' \\xc4'" in labels and "'\\x97'" in labels


# --- noise that overflows the network ---------------------------------------------------------------

@pytest.fixture(scope="module")
def overflowing(tiny):
    """§6 (with §7.2's components), §7 and §7.4 on the tiny models at noise levels up to 1e38: the top levels
    overflow fp32 on both (NaN or infinite logits), level 0 never does."""
    from dataclasses import replace

    from compare.reproduce.context import Context
    from compare.reproduce.sweeps import channels, flattened, noise

    handles, _ = tiny
    plan = replace(QUICK, noise_max=1e38, flattened_level=1e38, channel_level=1e38)
    ctx = Context(handles["mamba"], handles["gpt2"], plan, 0, None)
    with pytest.warns(Warning):
        sections = {"noise": noise(ctx), "flattened": flattened(ctx), "channels": channels(ctx)}
    return sections, plan


def numbers_of(section):
    return {n.key: n for n in section.numbers}


def test_overflowed_runs_are_counted_as_misses_in_the_noise_section(overflowing):
    sections, plan = overflowing
    s = sections["noise"]
    sweeps, got = s.frames["sweeps"], numbers_of(s)
    assert (~sweeps["finite"]).sum() > 0 and sweeps[sweeps["level"] == 0]["finite"].all()
    assert not sweeps[~sweeps["finite"]]["hit"].any()  # an overflowed run is a miss
    for (model, distribution, scale), g in sweeps.groupby(["model", "distribution", "scale"]):
        number = got[f"overflowed[{model}|{distribution}|{scale}]"]
        assert number.value == f"{int((~g['finite']).sum())} of {len(g)}"
        assert "misses" in number.definition
        rows = [n for r in s.rows for n in r.measured]
        assert number in rows  # shown in the section's table
    assert any("overflowed" in note and "misses" in note for note in s.notes)
    table = s.tables["components"]
    fits = s.frames["components"]
    for r in table.itertuples(index=False):
        g = fits[fits["component"] == r.component]
        assert r[table.columns.get_loc("overflowed runs (misses)")] == f"{int(g['overflowed'].sum())} of {int(g['n'].sum())}"
    assert fits["overflowed"].sum() > 0


def test_overflowed_draws_and_channel_runs_are_stated(overflowing):
    sections, plan = overflowing
    flat = numbers_of(sections["flattened"])
    over = [n for k, n in flat.items() if k.startswith("overflowed[")]
    assert over and all(n.value == f"{plan.flattened_draws} of {plan.flattened_draws}" for n in over)
    ranking, chan = sections["channels"].frames["ranking"], numbers_of(sections["channels"])
    for (model, axis), g in ranking.groupby(["model", "axis"]):
        assert chan[f"overflowed[{model}|{axis}]"].value == f"{int(g['overflowed'].sum())} of {len(g) * plan.channel_trials}"
    assert ranking["overflowed"].sum() > 0


def test_overflow_counts_reach_report_json(overflowing):
    sections, _ = overflowing
    s = sections["noise"]
    data = Report({}, [s], []).to_json()["sections"][0]
    keys = {n["key"]: n for n in data["numbers"]}
    assert all(keys[n.key]["value"] == n.value for n in s.numbers if n.key.startswith("overflowed["))
    assert any("overflowed" in note for note in data["notes"])


def test_header_names_the_channel_layer_each_model_ran(report):
    header, path = report["json"]["header"], report["path"]
    ran = pd.read_parquet(path / "data" / "channels_ranking.parquet").groupby("model")["layer"].unique()
    for m in header["models"]:
        assert m["layers"] == 2 and m["channel_layer"] == 1 == ran[m["name"]].item()  # 22 of 24 → 1 of 2
        assert f"layer 1 of {m['name']}'s 2" in header["plan"]["channel_layer"]
    assert "channel_layer: 22" not in html.unescape(report["html"])


# --- what the report asks of a family ---------------------------------------------------------------

@pytest.mark.parametrize("family, comp, role", [("mamba", "h", "ssm"), ("mamba2", "h", "ssm"),
                                                ("gpt2", "resid_post", "transformer"),
                                                ("pythia", "resid_post", "transformer")])
def test_each_family_declares_the_component_noised_and_its_role(tiny, family, comp, role):
    from compare import families
    from compare.reproduce.plan import component

    handles, _ = tiny
    h = handles[family]
    assert component(h) == comp == families.FAMILIES[family].default_component
    assert comp in h.arch.noisable
    assert families.FAMILIES[family].role == role


def test_roles_are_checked_on_mamba2_and_pythia_folders(tiny_dirs):
    from compare.reproduce.cli import check_roles

    dirs, _ = tiny_dirs
    assert check_roles(str(dirs["mamba2"]), str(dirs["pythia"])) == []
    assert "swapped" in check_roles(str(dirs["pythia"]), str(dirs["mamba2"]))[0]


def test_a_quick_report_runs_with_mamba2_in_the_mamba_role(tiny_dirs, tmp_path):
    """End to end on the tiny Mamba-2 and GPT-2 folders: every section written, Mamba-2's state h noised."""
    dirs, _ = tiny_dirs
    path = thesis_report(tmp_path / "report", models=(str(dirs["mamba2"]), str(dirs["gpt2"])), quick=True, device="cpu")
    data = json.loads((path / "report.json").read_text(encoding="utf-8"))
    assert [s["number"] for s in data["sections"]] == list(range(1, 11))
    assert [m["family"] for m in data["header"]["models"]] == ["mamba2", "gpt2"]
    sweeps = pd.read_parquet(path / "data" / "noise_sweeps.parquet")
    first = data["header"]["models"][0]["name"]
    assert set(sweeps[sweeps["model"] == first]["component"]) == {"h"}
    ranking = pd.read_parquet(path / "data" / "channels_ranking.parquet")
    assert set(ranking[ranking["model"] == first]["component"]) == {"h"}
    for s in data["sections"]:
        for relative in s["figures"] + s["frames"]:
            assert (path / relative).is_file(), relative
    assert "<html" in (path / "report.html").read_text(encoding="utf-8").lower()


# --- the logit lens beside the flattened L ----------------------------------------------------------

def test_lens_numbers_match_transformers_hidden_states_decoded_by_ln_f_and_the_head(report, tiny_dirs):
    """GPT-2's lens at layer l is softmax(lm_head(ln_f(hidden_states[l + 1]))) at the last position
    (transformers' last hidden state already has ln_f applied: there the lens is the output), over the
    tokenizer's 64 tokens (the head's 8 padding rows left out, as `Model.vocab_size`)."""
    _, refs = tiny_dirs
    ref, tok = refs["gpt2"], tiny_tokenizer()
    ids = torch_ids(tok.encode(IOI, add_special_tokens=False))
    mary = tok.encode(MARY, add_special_tokens=False)[0]
    with torch_no_grad():
        out = ref(ids, output_hidden_states=True)
        hs = out.hidden_states
        rows = [ref.lm_head(ref.transformer.ln_f(hs[l + 1]))[0, -1] for l in range(len(hs) - 2)] + [out.logits[0, -1]]
    rows = [r[: len(tok)] for r in rows]
    logp = [r.double().log_softmax(-1) for r in rows]
    p = [float(lp[mary].exp()) for lp in logp]
    rank = [int((r > r[mary]).sum()) for r in rows]
    final = logp[-1]
    kl = [float((final.exp() * (final - lp)).sum()) for lp in logp]
    assert value(report, "flattened", "lens_p_mary[gpt2]") == pytest.approx(p, abs=1e-4)
    assert value(report, "flattened", "lens_rank[gpt2]") == rank
    assert value(report, "flattened", "lens_kl[gpt2]") == pytest.approx(kl, abs=1e-4)
    first = next((l for l, r in enumerate(rank) if r == 0), None)
    assert value(report, "flattened", "lens_first_top[gpt2]") == first
    assert report["numbers"][("flattened", "lens_p_mary[gpt2]")]["n"] == len(rows)


def test_lens_figure_and_frame_are_written_for_both_models(report):
    path = report["path"]
    lens = pd.read_parquet(path / "data" / "flattened_lens.parquet")
    assert set(lens["model"]) == {"mamba", "gpt2"} and (path / "figures" / "flattened_lens.png").is_file()
    for name, g in lens.groupby("model"):
        assert sorted(set(g["layer"])) == [0, 1] and set(g["target"].str.strip()) == {MARY.strip()}
    assert "Logit lens" in report["html"]


def torch_ids(ids):
    import torch

    return torch.tensor([ids])


def torch_no_grad():
    import torch

    return torch.no_grad()


def test_compare_reproduce_is_the_package_and_calling_it_still_runs_the_report_with_a_warning(tiny_dirs, tmp_path,
                                                                                               monkeypatch):
    import compare
    import compare.reproduce.plan

    assert compare.reproduce is package and compare.reproduce.plan.QUICK is QUICK  # the package no longer hidden
    monkeypatch.setattr(package, "SECTIONS", SECTIONS[:1])
    dirs, _ = tiny_dirs
    with pytest.warns(DeprecationWarning, match="compare.thesis_report"):
        path = compare.reproduce(tmp_path / "r", models=(str(dirs["mamba"]), str(dirs["gpt2"])), quick=True,
                                 device="cpu")
    assert (path / "report.json").exists()
