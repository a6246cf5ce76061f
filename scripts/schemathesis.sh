#!/usr/bin/env bash
# Conformance: checks the server against its own OpenAPI document (/openapi.json) with
# schemathesis, all checks, every phase including stateful testing through the document's links.
# Starts the local server on a free 127.0.0.1 port with a fresh data dir, stops it afterwards, and
# fails on any finding. Last line: `conformance: N operations, N failures`.
#
# Generated hooks point at arbitrary URLs, and test, ping and the dispatcher send to them, so the
# server and schemathesis run in a fresh network namespace that has only loopback (`unshare -rn`).
# Where namespaces are unavailable the script refuses to run, unless CONFORMANCE_NETWORK=host says
# that sending generated requests to the outside world is acceptable.
#
# Knobs: CONFORMANCE_EXAMPLES (examples per operation, default 100), CONFORMANCE_SEED.
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

examples=${CONFORMANCE_EXAMPLES:-100}
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
work=$(mktemp -d -t event-hooks-conformance.XXXXXX)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# Short timeouts: generated targets are unreachable (no network) or the server itself.
"${CARGO_TARGET_DIR:-target}/debug/event-hooks-local" --listen "127.0.0.1:$port" --data-dir "$work/data" \
  --workers 2 --connect-timeout 1 --request-timeout 3 --retry-schedule 1h \
  >"$work/server.log" 2>&1 &
server_pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 200); do
  if curl -fsS "$base/openapi.json" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "event-hooks-local exited:" >&2
    cat "$work/server.log" >&2
    exit 1
  fi
  sleep 0.1
done

set +e
SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH="$PWD/scripts" CONFORMANCE_BASE_URL="$base" \
  .venv/bin/schemathesis --no-color --config-file scripts/schemathesis.toml run "$base/openapi.json" \
  --url "$base" \
  --checks all \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "$examples" \
  --seed "${CONFORMANCE_SEED:-1}" --generation-database none \
  2>&1 | tee "$work/schemathesis.log"
status=${PIPESTATUS[0]}
set -e

# Schemathesis's own counts: operations tested, and unique failures (none when all passed).
operations=$(grep -Eo '^ +Tested: [0-9]+' "$work/schemathesis.log" | grep -Eo '[0-9]+' || echo 0)
failures=$(grep -Eo '[0-9]+ unique failures?' "$work/schemathesis.log" | grep -Eo '^[0-9]+' || echo 0)
if [ "$status" -ne 0 ]; then
  echo "--- last lines of the server's log:"
  tail -n 40 "$work/server.log"
fi
if [ "$status" -ne 0 ] && [ "$failures" -eq 0 ]; then
  failures=1 # schemathesis failed without a report entry (an error of its own): still a failure
fi
echo "conformance: $operations operations, $failures failures"
exit "$status"
