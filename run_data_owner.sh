#!/usr/bin/env bash
# Start a Data Owner (port 5000). Options: --help.
exec "$(dirname "${BASH_SOURCE[0]}")/scripts/run_module.sh" requirements.txt data_owner "$@"
