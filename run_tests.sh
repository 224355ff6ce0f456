#!/usr/bin/env bash
# Run the whole test suite (unit, property, API and end-to-end tests) in the checkout's
# virtual environment, creating it first if needed. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$root/scripts/ensure_venv.sh" "$root/requirements-dev.txt"
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$root/.venv/bin/python" -m pytest "$@"
