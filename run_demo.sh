#!/usr/bin/env bash
# The main job end to end on one machine: a coordinator, three data owners on the shipped shards
# and a model creator, each a separate process on a free port; trains, prints the result, stops.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$root/scripts/ensure_venv.sh"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$root/.venv/bin/python" -m local_federation "$@"
