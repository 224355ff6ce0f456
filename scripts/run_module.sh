#!/usr/bin/env bash
# Run a Python module of the checkout in its virtual environment, creating or updating the
# environment first from a requirements file.
# Usage: scripts/run_module.sh REQUIREMENTS MODULE [ARGUMENTS...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
requirements="$1"
module="$2"
shift 2
"$root/scripts/ensure_venv.sh" "$root/$requirements"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$root/.venv/bin/python" -m "$module" "$@"
