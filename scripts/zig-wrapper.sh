#!/usr/bin/env bash
# Puts a `zig` command in .venv/bin: cargo-lambda (through cargo-zigbuild) looks for `zig` on
# PATH, and the ziglang wheel only provides `python -m ziglang`. Kept in the venv (not a temporary
# directory), so `sam build`, `make build` and a shell with .venv/bin on PATH all find it.
set -euo pipefail
cd "$(dirname "$0")/.."
wrapper=.venv/bin/zig
if [ ! -x "$wrapper" ]; then
  printf '#!/bin/sh\nexec "%s" -m ziglang "$@"\n' "$PWD/.venv/bin/python" >"$wrapper"
  chmod +x "$wrapper"
fi
