#!/usr/bin/env bash
# Conformance: checks the server against its own OpenAPI document (/openapi.json) with
# schemathesis and its default checks (every check), over several fixed seeds. The first seed runs
# every phase (the coverage phase's boundary values do not depend on the seed); the others add
# fuzzing and stateful testing through the document's links with their own random data. Each seed
# gets its own local server on a free 127.0.0.1 port with a fresh data dir, stopped afterwards.
# Fails on any finding; cases excluded on purpose are listed, each with its reason, in
# scripts/schemathesis.toml and scripts/schemathesis_hooks.py. Last line:
# `conformance: N operations, N failures, seeds …`.
#
# Generated hooks point at arbitrary URLs, and test, ping and the dispatcher send to them, so the
# server and schemathesis run in a fresh network namespace that has only loopback (`unshare -rn`).
# Where namespaces are unavailable the script refuses to run, unless CONFORMANCE_NETWORK=host says
# that sending generated requests to the outside world is acceptable.
#
# Knobs: CONFORMANCE_SEEDS (default "1 2 3"), CONFORMANCE_SEED=N (only seed N, every phase, to
# reproduce one seed's findings), CONFORMANCE_EXAMPLES (fuzzed examples per operation and seed,
# default 60).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${CONFORMANCE_IN_NETNS:-}" ] && [ "${CONFORMANCE_NETWORK:-}" != host ]; then
  scripts/venv.sh
  ${CARGO:-cargo} build --quiet -p event-hooks-local
  for flags in -rn -n; do
    if unshare "$flags" ip link set lo up 2>/dev/null; then
      exec env CONFORMANCE_IN_NETNS=1 unshare "$flags" "$0" "$@"
    fi
  done
  echo "conformance: cannot create a network namespace with loopback up (unshare -rn, ip); set CONFORMANCE_NETWORK=host to run without one" >&2
  exit 1
fi
if [ -n "${CONFORMANCE_IN_NETNS:-}" ]; then
  ip link set lo up
else
  scripts/venv.sh
  ${CARGO:-cargo} build --quiet -p event-hooks-local
fi

examples=${CONFORMANCE_EXAMPLES:-60}
if [ -n "${CONFORMANCE_SEED:-}" ]; then
  seeds=$CONFORMANCE_SEED
else
  seeds=${CONFORMANCE_SEEDS:-1 2 3}
fi
work=$(mktemp -d -t event-hooks-conformance.XXXXXX)
server_pid=
stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
cleanup() {
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# Starts a fresh server (its own data dir) on a free port; sets `base`.
start_server() {
  local dir=$1 port
  port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  # Short timeouts: generated targets are unreachable (no network) or the server itself. The Kong
  # relay takes unsigned events, so its 202s and 400s are generated too, not only its 401s.
  "${CARGO_TARGET_DIR:-target}/debug/event-hooks-local" --listen "127.0.0.1:$port" --data-dir "$dir/data" \
    --workers 2 --connect-timeout 1 --request-timeout 3 --retry-schedule 1h --relay-unsigned \
    >"$dir/server.log" 2>&1 &
  server_pid=$!
  base="http://127.0.0.1:$port"
  for _ in $(seq 1 200); do
    if curl -fsS "$base/openapi.json" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "event-hooks-local exited:" >&2
      cat "$dir/server.log" >&2
      exit 1
    fi
    sleep 0.1
  done
}

status=0
operations=0
failures=0
first=1
for seed in $seeds; do
  dir="$work/seed-$seed"
  mkdir -p "$dir"
  if [ "$first" = 1 ]; then phases=examples,coverage,fuzzing,stateful; else phases=fuzzing,stateful; fi
  first=0
  echo "=== conformance: seed $seed ($phases)"
  start_server "$dir"
  set +e
  SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH="$PWD/scripts" CONFORMANCE_BASE_URL="$base" \
    .venv/bin/schemathesis --no-color --config-file scripts/schemathesis.toml run "$base/openapi.json" \
    --url "$base" \
    --phases "$phases" \
    --max-examples "$examples" \
    --seed "$seed" --generation-database none \
    2>&1 | tee "$dir/schemathesis.log"
  seed_status=${PIPESTATUS[0]}
  set -e
  stop_server

  # Schemathesis's own counts: operations tested, and unique failures (none when all passed).
  seed_operations=$(grep -Eo '^ +Tested: [0-9]+' "$dir/schemathesis.log" | grep -Eo '[0-9]+' || echo 0)
  seed_failures=$(grep -Eo '[0-9]+ unique failures?' "$dir/schemathesis.log" | grep -Eo '^[0-9]+' || echo 0)
  if [ "$seed_status" -ne 0 ]; then
    echo "--- seed $seed: last lines of the server's log:"
    tail -n 40 "$dir/server.log"
    status=$seed_status
    if [ "$seed_failures" -eq 0 ]; then
      seed_failures=1 # schemathesis failed without a report entry (an error of its own): still a failure
    fi
  fi
  echo "=== conformance: seed $seed: $seed_operations operations, $seed_failures failures"
  if [ "$seed_operations" -gt "$operations" ]; then operations=$seed_operations; fi
  failures=$((failures + seed_failures))
done
echo "conformance: $operations operations, $failures failures, seeds $(echo $seeds)"
exit "$status"
