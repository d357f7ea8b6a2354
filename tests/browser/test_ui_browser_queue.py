"""The fair queue in headless Chromium: two users on one server with one slot per group.

A long job (a noise sweep) and a short one (Compare) queue in different groups (`ui.app`), so the
short one runs beside the sweep instead of after it; Stop takes a job that waits out of the queue.
"""
from __future__ import annotations

import time

import pytest

from test_ui_browser import CHROMIUM, TIMEOUT_MS, _fill, _free_port, _open_tab, browser_context  # noqa: F401

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} missing: run .ci/browser-setup.sh"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


@pytest.fixture(scope="module")
def url(tiny_dirs, tmp_path_factory):
    import os

    os.environ["GRADIO_EXAMPLES_CACHE"] = str(tmp_path_factory.mktemp("examples"))
    from ui import models
    from ui.app import build_app

    dirs, _ = tiny_dirs
    models.configure(mamba=str(dirs["mamba"]), gpt2=str(dirs["gpt2"]))
    demo = build_app(heavy_limit=1)  # one job at a time in each group, as served
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture
def slow_sweeps(monkeypatch):
    """Sweeps that take 30 s in blocks of 0.5 s (the tiny models sweep the capped size in about one):
    a stand-in for a real-size sweep, which stops at its next block like the engine's."""
    from compare.analyses.noise import noise_sweep

    from ui import tab_noise

    def slow(prompt, *, progress, stop, **kwargs):
        for _ in range(60):
            if stop.wait(0.5):
                break
        return noise_sweep(prompt, progress=progress, stop=stop, **kwargs)

    monkeypatch.setattr(tab_noise, "noise_sweep", slow)


def _long_sweep(page, url):
    page.goto(url)
    _open_tab(page, "Noise")
    _fill(page, "noise-prompt", "When Mary and John went to the")
    _fill(page, "noise-target", "Mary")
    page.locator("#noise-levels input").fill("4")
    page.locator("#noise-run").click()
    sync_api.expect(page.locator("#noise-note")).to_contain_text("Sweeping", timeout=TIMEOUT_MS)


def _stop_sweep(page):
    page.locator("#noise-stop").click()
    sync_api.expect(page.locator("#noise-note")).to_contain_text("Stopped", timeout=60_000)


def test_a_short_compare_runs_beside_another_users_sweep(browser_context, url, slow_sweeps):  # noqa: F811
    sweeper, comparer = browser_context.new_page(), browser_context.new_page()
    _long_sweep(sweeper, url)
    comparer.goto(url)
    comparer.locator("#cmp-prompt textarea").fill("When Mary and John went to the store")
    start = time.monotonic()
    comparer.locator("#cmp-run").click()
    sync_api.expect(comparer.locator("#cmp-table")).to_contain_text("mamba prediction", timeout=60_000)
    waited = time.monotonic() - start
    assert waited < 15, f"Compare took {waited:.1f} s behind a 30 s sweep"
    # the sweep is still running: the Compare did not wait for it
    assert "Stopped" not in sweeper.locator("#noise-note").inner_text()
    assert sweeper.locator('#noise-files a[href*="noise_sweep.csv"]').count() == 0, f"Compare took {waited:.1f} s"
    _stop_sweep(sweeper)
    sweeper.close()
    comparer.close()


def test_stop_takes_a_waiting_sweep_out_of_the_queue(browser_context, url, slow_sweeps):  # noqa: F811
    first, second = browser_context.new_page(), browser_context.new_page()
    _long_sweep(first, url)
    second.goto(url)
    _open_tab(second, "Noise")
    _fill(second, "noise-target", "Mary")
    second.locator("#noise-run").click()  # waits: the long group's one slot is the first user's
    # the page says where it waits (Gradio's status on the outputs: "queue: 1/1")
    sync_api.expect(second.locator("#noise-fits")).to_contain_text("queue: 1/", timeout=TIMEOUT_MS)
    second.locator("#noise-stop").click()
    toast = second.locator(".toast-message-text").first
    sync_api.expect(toast).to_contain_text("will not run", timeout=TIMEOUT_MS)
    _stop_sweep(first)
    # once the slot is free the second job starts, finds its Stop and sweeps nothing
    sync_api.expect(second.locator("#noise-note")).to_contain_text("Stopped before the first layer",
                                                                    timeout=TIMEOUT_MS)
    first.close()
    second.close()
