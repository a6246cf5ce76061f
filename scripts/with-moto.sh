#!/usr/bin/env bash
# Runs a command with a fresh moto server on a free loopback port, exported as MOTO_ENDPOINT.
# The server is always stopped afterwards, whether the command passes, fails or is interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log=$(mktemp -t moto.XXXXXX.log)
.venv/bin/moto_server -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
cleanup() { kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; rm -f "$log"; }
trap cleanup EXIT INT TERM
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$moto_pid" 2>/dev/null; then echo "moto_server exited:" >&2; cat "$log" >&2; exit 1; fi
  sleep 0.1
done
export MOTO_ENDPOINT="http://127.0.0.1:$port"
echo "moto server at $MOTO_ENDPOINT" >&2
"$@"
