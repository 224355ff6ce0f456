#!/usr/bin/env bash
# Run the benchmark suite (python -m bench) in the checkout's virtual environment, creating it
# first from bench/requirements.txt (the test requirements plus matplotlib) if needed.
# Usage: ./run_bench.sh [--quick|--full]   (default --quick; other arguments go to python -m bench)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$root/scripts/ensure_venv.sh" "$root/bench/requirements.txt"
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$root/.venv/bin/python" -m bench "$@"
