#!/usr/bin/env bash
# Debian's Chromium for the browser tests (tests/browser, driven by Playwright through
# executable_path; Playwright's own browser download is never used). Installed with apt-get
# when it is missing and this runs as root (CI); otherwise nothing is installed and the browser
# tests skip, naming the package, unless FT_REQUIRE_BROWSER=1 makes them fail.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "ensure_chromium: installing Debian's chromium for the browser tests" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "ensure_chromium: /usr/bin/chromium is missing and cannot be installed here (needs root and apt-get):" \
    "the browser tests will skip; install the package 'chromium' to run them" >&2
fi
