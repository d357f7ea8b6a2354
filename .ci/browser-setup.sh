#!/usr/bin/env bash
# What tests/browser/test_ui_browser.py needs on a fresh Debian machine: Debian's own Chromium.
# The Python `playwright` package comes with the test extra; no browser build is downloaded
# (the test launches /usr/bin/chromium through Playwright's executable_path).
# Also the fonts compare.figures.base falls back to for glyphs DejaVu Sans lacks: Noto Sans CJK
# (fonts-noto-cjk) and Symbola's monochrome emoji (fonts-symbola); without them the figures still
# render (CJK as empty boxes) and the glyph tests in tests/unit/test_figures.py are skipped.
set -euo pipefail
SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
updated=""
install() {
    [ -n "$updated" ] || { $SUDO apt-get update; updated=1; }
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "$@"
}
if [ ! -e /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc ] \
   || [ ! -e /usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf ]; then
    install fonts-noto-cjk fonts-symbola || echo "fonts-noto-cjk/fonts-symbola not installed: CJK and emoji glyph tests will be skipped"
fi
if [ ! -x /usr/bin/chromium ]; then
    install chromium
fi
/usr/bin/chromium --version
