#!/usr/bin/env bash
# Installs the Python tools of `make reliability` (schemathesis) into .venv, once.
# Re-runs only when requirements-reliability.txt changes; leaves the rest of .venv alone.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.reliability-requirements-installed
if [ -f "$stamp" ] && cmp -s requirements-reliability.txt "$stamp"; then
  exit 0
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements-reliability.txt
cp requirements-reliability.txt "$stamp"
