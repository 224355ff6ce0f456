#!/usr/bin/env bash
# Run the whole test suite (unit, property, API, fuzz and end-to-end tests) in the checkout's
# virtual environment, creating it first if needed. Extra arguments go to pytest (paths relative
# to the checkout).
cd "$(dirname "${BASH_SOURCE[0]}")" || exit 1
exec scripts/run_module.sh requirements-dev.txt pytest "$@"
