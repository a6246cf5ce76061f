#!/usr/bin/env bash
# The stack template.yaml declares, created in moto's CloudFormation (translated by the SAM CLI's
# translator), its three functions' release bootstraps run under the SAM CLI's Lambda Runtime
# Interface Emulator, HTTP through the template's routes, SQS through its event source mappings:
# Kong's documented flows, retries, dead letters, snooze/on_change, hook-on-hook events, test and
# ping, every events/*.json through `make invoke`, and the AWS requests per delivery.
# The bootstraps come from `make build` (run first by `make simulated-stack`). Extra arguments go
# to pytest (e.g. -k on_change, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh
cd tests/simstack
exec ../../.venv/bin/python -m pytest -q -p no:cacheprovider -rfE "$@" .
