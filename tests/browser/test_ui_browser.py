"""End to end in headless Chromium: the app on 127.0.0.1 against tiny local models.

Setup on a fresh Debian machine: `.ci/browser-setup.sh` (apt's chromium; no browser download).
Screenshots go to the test's tmp dir, or to $UI_ARTIFACTS when set (e.g. artifacts/ in CI).
"""
from __future__ import annotations

import os
import re
import socket
import tempfile
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         # Without these Chromium dials out at start and its refused connections stall the page.
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 30_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} missing: run .ci/browser-setup.sh"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url(tiny_dirs, tmp_path_factory):
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(tmp_path_factory.mktemp("examples"))
    from ui import models
    from ui.app import build_app

    dirs, _ = tiny_dirs
    models.configure(mamba=str(dirs["mamba"]), gpt2=str(dirs["gpt2"]))
    demo = build_app(heavy_limit=2)  # two heavy jobs at once, so two users' sweeps really overlap
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def browser_context():
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="chromium-profile-"), executable_path=str(CHROMIUM), args=FLAGS,
            viewport={"width": 1280, "height": 1000})
        context.set_default_timeout(TIMEOUT_MS)
        yield context
        context.close()


@pytest.fixture
def page(browser_context, url):
    page = browser_context.new_page()
    page.goto(url)
    yield page
    page.close()


@pytest.fixture
def shots(tmp_path):
    directory = Path(os.environ.get("UI_ARTIFACTS", tmp_path))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _open_tab(page, name: str):
    page.get_by_role("tab", name=name).click()


def _error_text(page) -> str:
    toast = page.locator(".toast-message-text").first
    toast.wait_for()
    return toast.inner_text()


def _table_text(page, elem_id: str, expect: str, timeout_ms: int = TIMEOUT_MS) -> str:
    table = page.locator(f"#{elem_id}")
    sync_api.expect(table).to_contain_text(expect, timeout=timeout_ms)
    return table.inner_text()


def _tokenize(page, text: str, expect: str) -> str:
    """The Tokenizers tab's table text once it shows `expect` for `text`."""
    _open_tab(page, "Tokenizers")
    page.locator("#tok-text textarea").fill(text)
    page.locator("#tok-run").click()
    return _table_text(page, "tok-table", expect)


def test_tokenizers_tab_shows_both_tokenisations(page, shots):
    text = _tokenize(page, "When Mary and John went", "John")
    for word in ("When", "Mary", "and", "John", "went"):
        assert word in text
    _plot(page, "tok-plot")
    page.screenshot(path=str(shots / "tokenizers.png"), full_page=True)


def test_empty_text_shows_message_and_app_keeps_serving(page, shots):
    _open_tab(page, "Tokenizers")
    page.locator("#tok-run").click()
    assert "empty" in _error_text(page)
    page.screenshot(path=str(shots / "empty-text.png"), full_page=True)
    page.locator("#tok-text textarea").fill("the cat")
    page.locator("#tok-run").click()
    assert "cat" in _table_text(page, "tok-table", "cat")


def _plot(page, elem_id: str):
    # a matplotlib figure arrives as an <img>; the hidden svg is the empty plot's icon
    page.locator(f"#{elem_id} img").first.wait_for()


def _vega_plot(page, elem_id: str) -> dict:
    """Wait for the Vega-Lite chart the browser draws in `elem_id` (vega-embed's canvas); returns
    its canvas size and how many of its pixels are not background (a drawn chart has many)."""
    canvas = page.locator(f"#{elem_id} [data-testid=altair] canvas").first
    canvas.wait_for()
    page.wait_for_function(
        f"() => {{ const c = document.querySelector('#{elem_id} [data-testid=altair] canvas');"
        " return c && c.width > 0 && c.height > 0; }")
    return canvas.evaluate("""c => {
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let inked = 0;
        for (let i = 0; i < data.length; i += 4)
            if (data[i + 3] > 0 && (data[i] < 200 || data[i + 1] < 200 || data[i + 2] < 200)) inked++;
        return {width: c.width, height: c.height, inked};
    }""")


def test_compare_shows_table_and_plots(page, shots):
    console = []
    page.on("console", lambda message: console.append((message.type, message.text)))
    page.locator("#cmp-prompt textarea").fill("When Mary and John went to the store")
    page.locator("#cmp-track input, #cmp-track textarea").first.fill("Mary")
    page.locator("#cmp-run").click()
    text = _table_text(page, "cmp-table", "store")
    for header in ("mamba prediction", "mamba P", "gpt2 prediction", "gpt2 P"):
        assert header in text
    for plot in ("cmp-trajectories", "cmp-cross"):  # drawn by the page from Vega-Lite specifications
        drawn = _vega_plot(page, plot)
        assert drawn["width"] > 300 and drawn["height"] > 200 and drawn["inked"] > 2000, (plot, drawn)
    # Vega-Lite reports what it could not draw (an unknown field, a bad scale) as console warnings
    assert not [text for kind, text in console if kind in ("error", "warning")], console
    page.locator("#cmp-prepare").click()
    files = page.locator("#cmp-files")
    sync_api.expect(files).to_contain_text("runs .parquet", timeout=TIMEOUT_MS)
    assert "mamba-gpt2-compare" not in files.inner_text()  # never the store's marker dotfile
    page.screenshot(path=str(shots / "compare.png"), full_page=True)


@pytest.mark.parametrize("label", ["natural (IOI)", "monotone", "periodic", "repeated random"])
def test_a_compare_example_shows_its_cached_results(page, label, shots):
    page.locator("#cmp-table").wait_for()
    page.get_by_text(label, exact=True).first.click()
    text = _table_text(page, "cmp-table", "mamba prediction")
    assert "gpt2 prediction" in text
    assert page.locator(".toast-message-text").count() == 0
    assert _vega_plot(page, "cmp-trajectories")["inked"] > 2000  # every example tracks a token
    page.screenshot(path=str(shots / f"compare-example-{label.split()[0]}.png"), full_page=True)
    page.locator("#cmp-prepare").click()  # the files of what the example shows
    sync_api.expect(page.locator("#cmp-files")).to_contain_text("table .csv", timeout=TIMEOUT_MS)


def test_a_tokenizers_example_shows_its_cached_results(page):
    from ui.tab_tokenizers import EXAMPLES

    _open_tab(page, "Tokenizers")
    page.get_by_text(EXAMPLES[0][:30]).first.click()
    assert "mamba ids" in _table_text(page, "tok-table", "Mary")
    assert page.locator(".toast-message-text").count() == 0


def test_over_long_prompt_names_the_cap(page, shots):
    from ui.limits import LIMITS

    page.locator("#cmp-prompt textarea").fill("cat " * (LIMITS.prompt_tokens + 1))
    page.locator("#cmp-run").click()
    assert f"cap is {LIMITS.prompt_tokens} tokens" in _error_text(page)
    page.screenshot(path=str(shots / "over-long-prompt.png"), full_page=True)


def test_noise_sweep_shows_curves_and_fits(page, shots):
    _open_tab(page, "Noise")
    page.locator("#noise-prompt textarea, #noise-prompt input").first.fill("When Mary and John went to the")
    page.locator("#noise-target textarea, #noise-target input").first.fill("Mary")
    page.locator("#noise-levels input").fill("8")
    page.locator("#noise-run").click()
    text = _table_text(page, "noise-fits", "critical_level")
    assert "mamba" in text and "h" in text
    _plot(page, "noise-heatmap")
    page.screenshot(path=str(shots / "noise.png"), full_page=True)


def test_absurd_sweep_is_refused_and_app_keeps_serving(page, shots):
    _open_tab(page, "Noise")
    page.locator("#noise-levels input").fill("100000")
    page.locator("#noise-run").click()
    assert "levels must be in" in _error_text(page)
    page.screenshot(path=str(shots / "absurd-sweep.png"), full_page=True)
    page.locator("#noise-levels input").fill("4")
    page.locator("#noise-target textarea, #noise-target input").first.fill("Mary")
    page.locator("#noise-run").click()
    _table_text(page, "noise-fits", "critical_level")


def test_distributions_work_after_a_compare_example(page, shots):
    page.get_by_text("monotone", exact=True).first.click()  # a cached example: fills the inputs, runs nothing
    _open_tab(page, "Distributions")
    page.locator("#dist-run").click()
    text = _table_text(page, "dist-table", "skew")
    assert "mamba" in text and "gpt2" in text and "the" in text
    _plot(page, "dist-k")
    _plot(page, "dist-flat")
    page.screenshot(path=str(shots / "distributions.png"), full_page=True)


def test_patterns_builds_a_periodic_prompt_and_compares_it(page, shots):
    _open_tab(page, "Patterns")
    page.locator("#pat-spec textarea, #pat-spec input").first.fill("5, 6")
    page.locator("#pat-length input").fill("8")
    page.locator("#pat-run").click()
    assert "gpt2 aligned ids" in _table_text(page, "pat-preview", "gpt2 aligned ids")
    assert "lock-in position" in _table_text(page, "pat-lockin", "lock-in position")
    _table_text(page, "pat-table", "mamba prediction")
    _plot(page, "pat-plot")
    page.screenshot(path=str(shots / "patterns.png"), full_page=True)


def test_datasets_builds_suites_and_offers_parquet(page, shots):
    _open_tab(page, "Datasets")
    # the default periodic cycle (IDs 42, 69) lies outside the tiny models' 64-token vocabulary
    page.locator("#ds-suites").get_by_label("periodic").uncheck()
    page.locator("#ds-suites").get_by_label("repeated_random").check()
    page.locator("#ds-run").click()
    sync_api.expect(page.locator("#ds-files")).to_contain_text("repeated_random", timeout=TIMEOUT_MS)
    assert "monotone" in page.locator("#ds-files").inner_text()
    assert "monotone-00000" in _table_text(page, "ds-preview", "monotone-00000")
    page.screenshot(path=str(shots / "datasets.png"), full_page=True)


def test_a_suite_the_served_vocabulary_cannot_hold_shows_why(page, shots):
    _open_tab(page, "Datasets")
    page.locator("#ds-run").click()  # default periodic cycle 42, 69: outside the tiny vocabulary
    assert "outside the mamba vocabulary; allowed values are 0..63" in _error_text(page)
    page.screenshot(path=str(shots / "datasets-out-of-vocabulary.png"), full_page=True)


def test_channel_sensitivity_ranks_channels_of_the_noise_tabs_component(page, shots):
    _open_tab(page, "Noise")
    page.locator("#noise-prompt textarea, #noise-prompt input").first.fill("When Mary and John went to the")
    page.locator("#noise-target textarea, #noise-target input").first.fill("Mary")
    page.locator("#channels").get_by_text("Channel sensitivity").click()  # open the accordion
    page.locator("#channels-run").click()
    text = _table_text(page, "channels-table", "flip_rate")
    # the default component h ranks both axes, named by their glossary letters d_in and n
    assert "d_in" in text and re.search(r"(^|\s)n(\s|$)", text)
    _plot(page, "channels-bars")
    sync_api.expect(page.locator("#channels-files")).to_contain_text("channel_sensitivity", timeout=TIMEOUT_MS)
    page.screenshot(path=str(shots / "channels.png"), full_page=True)


def _fill(page, elem_id: str, value: str):
    page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(value)


def _toast(page) -> tuple[str, str]:
    toast = page.locator(".toast-body").first
    toast.wait_for()
    return toast.locator(".toast-title").first.inner_text(), toast.locator(".toast-message-text").first.inner_text()


def test_error_toast_is_titled_and_names_the_cap(page, shots):
    _open_tab(page, "Noise")
    page.locator("#noise-levels input").fill("100000")
    page.locator("#noise-run").click()
    title, message = _toast(page)
    assert message.startswith("Input refused: ") and "levels must be in" in message


def test_compare_opens_with_the_ioi_prompt_and_shows_p_in_scientific_notation(page, shots):
    assert page.locator("#cmp-prompt textarea").input_value() == (
        "When Mary and John went to the store, John gave a drink to")
    page.locator("#cmp-run").click()
    text = _table_text(page, "cmp-table", "drink")
    assert re.search(r"\d\.\d\de-\d\d", text)
    _vega_plot(page, "cmp-trajectories")
    # the figure's own title is not covered by a label: the plot has none
    labels = page.locator("#cmp-trajectories [data-testid=block-label]")
    assert not any(labels.nth(i).is_visible() for i in range(labels.count()))
    page.locator("#cmp-k-axis").get_by_label("log", exact=True).check()
    page.wait_for_timeout(500)
    assert _vega_plot(page, "cmp-trajectories")["inked"] > 2000
    page.screenshot(path=str(shots / "compare-ioi.png"), full_page=True)


def test_compare_stop_returns_the_page_to_idle(page, shots):
    page.locator("#cmp-run").click()
    page.locator("#cmp-stop").click()
    page.locator("#cmp-prompt textarea").fill("the cat")
    page.locator("#cmp-run").click()  # while the stopped run still ends: it runs after it (ui.jobs)
    # a Stop that lands before the run starts, or once its models are done, lets it finish: then
    # both runs' figures are drawn, which on a loaded machine took longer than one TIMEOUT_MS
    _table_text(page, "cmp-table", "cat", timeout_ms=3 * TIMEOUT_MS)


def test_method_note_links_the_papers(page):
    page.locator("#method").get_by_text("Method").first.click()
    for href in ("https://arxiv.org/abs/2312.00752", "https://arxiv.org/abs/2211.00593"):
        sync_api.expect(page.locator(f'#method a[href="{href}"]')).to_have_count(1)


def test_noise_tab_states_the_clean_prediction_before_sweeping(page, shots):
    _open_tab(page, "Noise")
    _fill(page, "noise-prompt", "When Mary and John went to the")
    _fill(page, "noise-target", "Mary")
    page.locator("#noise-levels input").fill("4")
    page.locator("#noise-run").click()
    note = page.locator("#noise-note")
    sync_api.expect(note).to_contain_text("Clean run: the last position predicts", timeout=TIMEOUT_MS)
    assert "P(target 'Mary')" in note.inner_text()
    _table_text(page, "noise-fits", "critical_level")
    page.screenshot(path=str(shots / "noise-clean-note.png"), full_page=True)


def test_noise_layers_to_plot_can_be_picked(page, shots):
    _open_tab(page, "Noise")
    _fill(page, "noise-target", "Mary")
    page.locator("#noise-levels input").fill("4")
    page.locator("#noise-run").click()
    _table_text(page, "noise-fits", "critical_level")
    picker = page.locator("#noise-plot-layers")
    picker.get_by_label("0", exact=True).uncheck()
    page.wait_for_timeout(1000)
    _plot(page, "noise-curves")
    page.screenshot(path=str(shots / "noise-layer-1-only.png"), full_page=True)


def test_noise_reversed_layer_range_says_how_to_write_it(page):
    _open_tab(page, "Noise")
    _fill(page, "noise-layers", "1-0")
    page.locator("#noise-run").click()
    assert "write it low to high, '0-1'" in _error_text(page)


def test_tokenizers_rows_are_spans_of_text(page, shots):
    text = _tokenize(page, "When Mary went", "went")
    for header in ("text", "mamba tokens", "mamba ids", "gpt2 tokens", "gpt2 ids"):
        assert header in text


def test_datasets_preview_shows_every_column(page):
    _open_tab(page, "Datasets")
    page.locator("#ds-suites").get_by_label("periodic").uncheck()
    page.locator("#ds-run").click()
    text = _table_text(page, "ds-preview", "monotone-00000")
    for column in ("seed", "suite", "mamba_aligned_ids", "gpt2_native_ids"):
        assert column in text


def test_two_users_sweeping_at_once_get_their_solo_results(browser_context, url, tiny_dirs):
    import io

    import numpy as np
    import pandas as pd

    from compare import noise_sweep
    from ui import models

    jobs = [("When Mary and John went to the", "0"), ("When John and Mary went to the store ,", "0")]
    pages = []
    for prompt, seed in jobs:  # both sweeps are submitted before either finishes
        page = browser_context.new_page()
        page.goto(url)
        _open_tab(page, "Noise")
        _fill(page, "noise-prompt", prompt)
        _fill(page, "noise-target", "Mary")
        page.locator("#noise-levels input").fill("6")
        page.locator("#noise-trials input").fill("3")
        pages.append(page)
    for page in pages:
        page.locator("#noise-run").click()
    for page, (prompt, _) in zip(pages, jobs):
        sync_api.expect(page.locator("#noise-files")).to_contain_text("noise_sweep", timeout=60_000)
        link = page.locator('#noise-files a[href*="noise_sweep.csv"]').first
        body = page.request.get(link.get_attribute("href")).body()
        got = pd.read_csv(io.BytesIO(body))
        solo = noise_sweep(prompt, model=models.get("mamba"), target="Mary", component="h", layers=[0, 1],
                           levels=np.linspace(0, 1, 6), trials=3, scale="relative", seed=0)
        for column in ("layer", "level", "trial", "hit", "predicted_id"):
            assert got[column].tolist() == solo[column].tolist(), column
        np.testing.assert_allclose(got["p_target"], solo["p_target"], rtol=1e-5, atol=1e-7)
        page.close()


@pytest.fixture(scope="module")
def url_with_missing_model(tiny_dirs):
    from ui import models
    from ui.app import build_app

    statuses = [models.Status("mamba", "/nowhere/mamba", None,
                              f"mamba model '/nowhere/mamba' could not be loaded: no such directory. "
                              f"Fix: {models.fix('mamba')}."),
                models.Status("gpt2", "gpt2", "gpt2", None)]
    demo = build_app(statuses=statuses)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_startup_banner_names_the_missing_model_and_the_fix(browser_context, url_with_missing_model, shots):
    page = browser_context.new_page()
    page.goto(url_with_missing_model)
    banner = page.locator("#startup-banner")
    sync_api.expect(banner).to_contain_text("MISSING", timeout=TIMEOUT_MS)
    text = banner.inner_text()
    assert "--mamba DIR" in text and "MAMBA_MODEL=DIR" in text and "gpt2: loaded" in text
    assert "load_model" not in text
    page.screenshot(path=str(shots / "startup-banner.png"), full_page=True)
    page.close()
