#!/usr/bin/env bash
# The main job end to end on one machine: a coordinator, three data owners on the shipped shards
# and a model creator, each a separate process on a free port; trains, prints the result, stops.
# Options: --help.
exec "$(dirname "${BASH_SOURCE[0]}")/scripts/run_module.sh" requirements.txt local_federation "$@"
