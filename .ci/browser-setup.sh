#!/usr/bin/env bash
# What tests/test_ui_browser.py needs on a fresh Debian machine: Debian's own Chromium.
# The Python `playwright` package comes with the test extra; no browser build is downloaded
# (the test launches /usr/bin/chromium through Playwright's executable_path).
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
    SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium
fi
/usr/bin/chromium --version
