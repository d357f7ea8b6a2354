"""A newcomer offline in headless Chromium: no configured model loads, local folders typed into
Compare's and Noise's Models pickers are what every check of those tabs uses."""
from __future__ import annotations

import socket

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

    import huggingface_hub.constants

    from ui import models
    from ui.app import build_app

    os.environ["GRADIO_EXAMPLES_CACHE"] = str(tmp_path_factory.mktemp("examples"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    saved = (dict(models._configured), models.HUB, dict(models._hub), huggingface_hub.constants.HF_HUB_OFFLINE)
    models._configured.update(mamba="/nowhere/mamba", gpt2="/nowhere/gpt2")
    models.HUB, models._hub = ("127.0.0.1", closed), {}
    demo = build_app()
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()
    models._configured.clear()
    models._configured.update(saved[0])
    models.HUB, models._hub, huggingface_hub.constants.HF_HUB_OFFLINE = saved[1], saved[2], saved[3]


def _type_model(page, elem_id: str, path: str):
    box = page.locator(f"#{elem_id} input").first
    box.click()
    box.fill(path)
    box.press("Enter")


def test_two_folders_typed_into_compare_are_compared(browser_context, url, tiny_dirs):  # noqa: F811
    dirs, _ = tiny_dirs
    page = browser_context.new_page()
    page.goto(url)
    page.locator("#cmp-models .remove-all").click()  # the configured pair, which cannot load
    _type_model(page, "cmp-models", str(dirs["pythia"]))
    _type_model(page, "cmp-models", str(dirs["gpt2"]))
    page.locator("#cmp-prompt textarea").fill("When Mary and John went to the store")
    page.locator("#cmp-run").click()
    table = page.locator("#cmp-table")
    sync_api.expect(table).to_contain_text("pythia prediction", timeout=60_000)
    assert "gpt2 prediction" in table.inner_text()
    page.close()


def test_a_folder_typed_into_noise_is_swept(browser_context, url, tiny_dirs):  # noqa: F811
    dirs, _ = tiny_dirs
    page = browser_context.new_page()
    page.goto(url)
    _open_tab(page, "Noise")
    _type_model(page, "noise-model", str(dirs["mamba"]))
    _fill(page, "noise-target", "#5")
    page.locator("#noise-levels input").fill("3")
    page.locator("#noise-run").click()
    sync_api.expect(page.locator("#noise-fits")).to_contain_text("critical_level", timeout=60_000)
    page.close()
