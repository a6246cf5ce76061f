#!/usr/bin/env bash
# Creates .venv with the Python tools the tests need (moto's server, the SAM CLI, schemathesis), once.
# Re-runs only when requirements-dev.txt changes.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.requirements-installed
if [ -f "$stamp" ] && cmp -s requirements-dev.txt "$stamp"; then
  exit 0
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
cp requirements-dev.txt "$stamp"
