#!/usr/bin/env bash
# The committed dashboard (dashboard/dist) is exactly what the sources in ui/ build to.
#
# The built pages are committed so that the run scripts and `pip install .` need no Node; this
# check (run by .ci/run) proves they are not stale or edited by hand: it copies ui/ without its
# node_modules, installs the locked packages (npm ci) and builds into a temporary directory,
# and fails if any file differs from, or is missing in, dashboard/dist. The build is
# deterministic (content-hashed names, nothing from the time or the directory), so equal
# sources give equal bytes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "check_dashboard_build: node and npm are needed (Node ^20.19 or >=22.12, as Vite 8 asks)" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir "$work/ui"
tar --exclude=./node_modules -C ui -cf - . | tar -C "$work/ui" -xf -
(
  cd "$work/ui"
  npm ci --no-audit --no-fund --loglevel=error
  npx --no-install vite build --outDir "$work/dist" --emptyOutDir --logLevel warn
)
if ! diff -r "$work/dist" dashboard/dist; then
  echo "check_dashboard_build: dashboard/dist is not what ui/ builds to;" \
    "run 'cd ui && npm ci && npm run build' and commit dashboard/dist" >&2
  exit 1
fi
echo "check_dashboard_build: dashboard/dist is what ui/ builds to"
