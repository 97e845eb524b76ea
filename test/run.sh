#!/usr/bin/env bash
# `npm test`: build, bring the local backbone up through deploy/local (installing it on first
# use), run the unit and integration tests against it, and stop what this run started.
# Under CI=true a service that cannot start fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

npm run lint --silent
npm run build --silent

started_file=$(mktemp)
cleanup() {
  # Stop only what this run started (one service name per line); `down` with no names would
  # stop everything, including a stack the developer had running.
  mapfile -t started < <(grep -E '^[a-z]+$' "$started_file" || true)
  if [ "${#started[@]}" -gt 0 ]; then
    node dist/deploy/local/cli.js down "${started[@]}" || true
  fi
  rm -f "$started_file"
}
trap cleanup EXIT

# The tests flush Redis and consume the default topics: a running product (`npm run up`) is
# stopped first; `npm run up` starts it again.
node dist/deploy/local/cli.js down stream serving
node dist/deploy/local/cli.js up --started-file "$started_file"

mapfile -t files < <(find dist/test/unit dist/test/integration -name '*.test.js' 2>/dev/null | sort)
# One test file at a time: integration files share the services (and this machine has 2 cores).
node --test --test-reporter=spec --test-concurrency=1 --test-timeout=300000 "${files[@]}"
