#!/usr/bin/env bash
# Start the Training Coordinator (port 8080). Options: --help.
exec "$(dirname "${BASH_SOURCE[0]}")/scripts/run_module.sh" requirements.txt coordinator "$@"
