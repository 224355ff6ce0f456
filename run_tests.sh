#!/usr/bin/env bash
# Run the whole test suite (unit, property, API, fuzz and end-to-end tests) in the checkout's
# virtual environment, creating it first if needed. Extra arguments go to pytest (paths relative
# to the checkout). The browser tests need Debian's Chromium: installed first when missing and
# run as root, otherwise those tests skip naming the package.
cd "$(dirname "${BASH_SOURCE[0]}")" || exit 1
scripts/ensure_chromium.sh || echo "run_tests: Chromium could not be installed; the browser tests will skip" >&2
exec scripts/run_module.sh requirements-dev.txt pytest "$@"
