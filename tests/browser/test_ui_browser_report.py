"""The Report tab end to end in headless Chromium: a quick report on the tiny models, shown inline
(every section and figure), offered as files. The app, Chromium and the helpers are those of
tests/browser/test_ui_browser.py."""
from __future__ import annotations

import json

import pytest

from test_ui_browser import CHROMIUM, _open_tab, browser_context, page, shots, sync_api, url  # noqa: F401

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} missing: run .ci/browser-setup.sh"),
]
REPORT_MS = 180_000  # a quick report renders ~20 figures; a loaded 2-core machine takes minutes


def test_report_tab_runs_a_quick_report_and_shows_every_section(page, shots):  # noqa: F811
    _open_tab(page, "Report")
    page.locator("#report-size").get_by_label("quick", exact=True).check()
    page.locator("#report-run").click()
    sync_api.expect(page.locator("#report-files")).to_contain_text("report .json", timeout=REPORT_MS)
    report = page.frame_locator("#report-frame")
    sync_api.expect(report.locator("section")).to_have_count(10)
    for number in range(1, 11):
        sync_api.expect(report.locator(f"#section-{number} h2")).to_contain_text(f"{number}.")
    sync_api.expect(report.locator("#weights-warning")).to_contain_text("weights that were run")
    link = page.locator('#report-files a[href*="report.json"]').first
    numbers = json.loads(page.request.get(link.get_attribute("href")).body())
    figures = sum(len(s["figures"]) for s in numbers["sections"])
    images = report.locator('figure img[src^="data:image/png;base64,"]')
    sync_api.expect(images).to_have_count(figures)
    # every figure is decoded by the browser (a broken base64 image has no natural width)
    widths = images.evaluate_all("imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert all(w > 0 for w in widths)
    sync_api.expect(page.locator("#report-files")).to_contain_text(".zip")
    page.screenshot(path=str(shots / "report.png"), full_page=True)


def test_report_tab_refuses_a_negative_seed(page):  # noqa: F811
    _open_tab(page, "Report")
    page.locator("#report-seed input").fill("-1")
    page.locator("#report-run").click()
    toast = page.locator(".toast-message-text").first
    toast.wait_for()
    assert "seed must be ≥ 0" in toast.inner_text()
