#!/usr/bin/env bash
# Measures the local server (spec §9): time from start to the first answered request, and resident
# memory when idle. Builds the release binary first. Usage: scripts/startup-bench.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
cargo build --release -p event-hooks-local >/dev/null
bin=target/release/event-hooks-local
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
best=""; total=0
for i in $(seq 1 "$runs"); do
  dir=$(mktemp -d)
  start=$(date +%s%N)
  RUST_LOG=warn "$bin" --listen "127.0.0.1:$port" --data-dir "$dir" &
  pid=$!
  until curl -fsS -o /dev/null "http://127.0.0.1:$port/status" 2>/dev/null; do sleep 0.001; done
  end=$(date +%s%N)
  ms=$(( (end - start) / 1000000 ))
  total=$((total + ms))
  if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
  if [ "$i" -eq "$runs" ]; then
    sleep 2
    rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
done
echo "start to first answered request: best ${best} ms, mean $((total / runs)) ms over ${runs} runs (fresh data directory)"
echo "idle RSS after 2 s: $((rss_kb / 1024)) MB (${rss_kb} kB)"
