"""The Lens tab end to end in headless Chromium on the tiny pair: the default prompt's lens shown as
both heatmaps, the table and the files; a target of two tokens refused with its reason in a toast.
The app, Chromium and the helpers are those of tests/browser/test_ui_browser.py."""
from __future__ import annotations

import pytest

from test_ui_browser import (CHROMIUM, TIMEOUT_MS, _fill, _open_tab, _plot, _table_text, _toast,  # noqa: F401
                             browser_context, page, shots, sync_api, url)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} missing: run .ci/browser-setup.sh"),
]


def test_lens_tab_shows_both_models_heatmaps_table_and_files(page, shots):  # noqa: F811
    _open_tab(page, "Lens")
    page.locator("#lens-run").click()
    table = _table_text(page, "lens-table", "mamba", timeout_ms=2 * TIMEOUT_MS)
    for column in ("top_tokens", "target_prob", "kl"):
        assert column in table
    sync_api.expect(page.locator("#lens-note")).to_contain_text("target 'Mary'", timeout=TIMEOUT_MS)
    sync_api.expect(page.locator("#lens-note")).to_contain_text("gpt2: 2 layers")
    _plot(page, "lens-top")
    _plot(page, "lens-target-prob")
    sync_api.expect(page.locator("#lens-files")).to_contain_text("lens .csv", timeout=TIMEOUT_MS)
    page.screenshot(path=str(shots / "lens.png"), full_page=True)


def test_lens_tab_refuses_a_target_of_two_tokens(page):  # noqa: F811
    _open_tab(page, "Lens")
    _fill(page, "lens-target", "Mary John")
    page.locator("#lens-run").click()
    title, message = _toast(page)
    assert message.startswith("Invalid input: target: 'Mary John' is 2 tokens")
