#!/usr/bin/env bash
# Create the checkout's virtual environment (.venv) from a requirements file on first use, and
# bring it up to date when that file changes. Safe to run from several terminals at once.
# Usage: scripts/ensure_venv.sh [requirements file]   (prints nothing on success when up to date)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
requirements="${1:-$root/requirements.txt}"
venv="$root/.venv"
python="${PYTHON:-python3}"
# Everything a requirements file pulls in with -r, itself included, depth first.
requirement_files() {
  local file="$1" dir line
  dir="$(cd "$(dirname "$file")" && pwd)"
  echo "$dir/$(basename "$file")"
  while read -r line; do
    if [[ $line =~ ^-r[[:space:]]*(.+)$ ]]; then
      requirement_files "$dir/${BASH_REMATCH[1]}"
    fi
  done < "$file"
}
files="$(requirement_files "$requirements")"
stamp="$venv/.installed-$(echo "$files" | head -n 1 | sha256sum | cut -c1-16)"

exec 9>"$root/.venv.lock"
flock 9
if [[ ! -x "$venv/bin/python" ]]; then
  echo "Creating the virtual environment in $venv ..." >&2
  "$python" -m venv "$venv"
fi
wanted="$(echo "$files" | xargs cat | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$wanted" ]]; then
  echo "Installing ${requirements#"$root"/} into $venv ..." >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
  echo "$wanted" > "$stamp"
fi
