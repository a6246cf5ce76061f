#!/usr/bin/env bash
# Builds the workspace once, then runs every Rust test (unit, contract suites against SQLite and
# a fresh moto server, HTTP tests against the real binaries) and prints one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp -t event-hooks-tests.XXXXXX.log)
trap 'rm -f "$log"' EXIT
cargo build --workspace --all-targets
set +e # print the summary whatever happens, then exit with the tests' status
EVENT_HOOKS_REQUIRE_MOTO=1 scripts/with-moto.sh cargo test --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
echo "tests: $passed passed, $failed failed"
exit "$status"
