#!/usr/bin/env bash
# Create the checkout's virtual environment (.venv) from a requirements file on first use, and
# bring it up to date when that file changes. Safe to run from several terminals at once.
# Usage: scripts/ensure_venv.sh [requirements file]   (prints nothing on success when up to date)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
requirements="${1:-$root/requirements.txt}"
venv="$root/.venv"
python="${PYTHON:-python3}"
stamp="$venv/.installed-$(basename "$requirements")"

exec 9>"$root/.venv.lock"
flock 9
if [[ ! -x "$venv/bin/python" ]]; then
  echo "Creating the virtual environment in $venv ..." >&2
  "$python" -m venv "$venv"
fi
wanted="$(cat "$requirements" "$root/requirements.txt" | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$wanted" ]]; then
  echo "Installing $(basename "$requirements") into $venv ..." >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
  echo "$wanted" > "$stamp"
fi
