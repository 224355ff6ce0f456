#!/usr/bin/env bash
# Run the benchmark suite (python -m bench) in the checkout's virtual environment, creating it
# first from bench/requirements.txt (the test requirements plus matplotlib) if needed.
# Usage: ./run_bench.sh [--quick|--full]   (default --quick; other arguments go to python -m bench)
cd "$(dirname "${BASH_SOURCE[0]}")" || exit 1
exec scripts/run_module.sh bench/requirements.txt bench "$@"
