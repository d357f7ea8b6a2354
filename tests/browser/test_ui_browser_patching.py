"""The Patching tab end to end in headless Chromium: a typed pair patched on both tiny models, the
recovery table and heatmaps shown, the files offered, the attention maps drawn, and a pair of
unequal lengths refused with its reason. The app, Chromium and the helpers are those of
tests/browser/test_ui_browser.py."""
from __future__ import annotations

import pytest

from test_ui_browser import (CHROMIUM, TIMEOUT_MS, _error_text, _open_tab, _plot, _table_text,  # noqa: F401
                             browser_context, page, shots, sync_api, url)
from conftest import CLEAN, CORRUPT

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} missing: run .ci/browser-setup.sh"),
]


def _fill_pair(page, clean: str, corrupt: str):
    _open_tab(page, "Patching")
    page.locator("#patching-clean textarea").fill(clean)
    page.locator("#patching-corrupt textarea").fill(corrupt)


def test_patching_tab_shows_both_models_recovery_and_attention(page, shots):  # noqa: F811
    _fill_pair(page, CLEAN, CORRUPT)
    page.locator("#patching-run").click()
    # the table renders the rows in view only: Mamba's come first, GPT-2's are named in the note
    table = _table_text(page, "patching-table", "mamba", timeout_ms=4 * TIMEOUT_MS)
    assert "recovery" in table
    for name in ("mamba", "gpt2"):
        sync_api.expect(page.locator("#patching-note")).to_contain_text(f"{name}: logit_diff clean")
    _plot(page, "patching-heatmaps")
    sync_api.expect(page.locator("#patching-files")).to_contain_text("patching", timeout=TIMEOUT_MS)
    page.locator("#patching-attention").click()
    _plot(page, "patching-maps")
    page.screenshot(path=str(shots / "patching.png"), full_page=True)


def test_patching_tab_refuses_a_pair_of_unequal_lengths(page):  # noqa: F811
    _fill_pair(page, CLEAN, CORRUPT + " drink")
    page.locator("#patching-run").click()
    assert "same number of tokens" in _error_text(page)


def test_patching_tab_estimate_mode_says_it_is_a_first_order_estimate(page):  # noqa: F811
    _fill_pair(page, CLEAN, CORRUPT)
    page.locator("#patching-mode").get_by_label("estimate", exact=True).check()
    page.locator("#patching-run").click()
    sync_api.expect(page.locator("#patching-note")).to_contain_text("First-order estimate", timeout=2 * TIMEOUT_MS)
    assert "estimate" in _table_text(page, "patching-table", "mamba")
    _plot(page, "patching-heatmaps")
    sync_api.expect(page.locator("#patching-files")).to_contain_text("attribution", timeout=TIMEOUT_MS)
