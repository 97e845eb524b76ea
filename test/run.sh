#!/usr/bin/env bash
# `npm test`: build, bring the local backbone up through deploy/local (installing it on first
# use), run the unit and integration tests against it, and stop what this run started.
# Under CI=true a service that cannot start fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

npm run build --silent

started_file=$(mktemp)
cleanup() {
  if [ -s "$started_file" ]; then
    # shellcheck disable=SC2046
    node dist/deploy/local/cli.js down $(cat "$started_file") || true
  fi
  rm -f "$started_file"
}
trap cleanup EXIT

node dist/deploy/local/cli.js up --started-file "$started_file"

mapfile -t files < <(find dist/test/unit dist/test/integration -name '*.test.js' 2>/dev/null | sort)
# One test file at a time: integration files share the services (and this machine has 2 cores).
node --test --test-reporter=spec --test-concurrency=1 --test-timeout=300000 "${files[@]}"
