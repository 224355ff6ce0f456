#!/usr/bin/env bash
# Start the Model Creator (port 9090). Options: --help.
exec "$(dirname "${BASH_SOURCE[0]}")/scripts/run_module.sh" requirements.txt model_creator "$@"
