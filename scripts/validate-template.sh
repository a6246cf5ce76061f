#!/usr/bin/env bash
# Validates template.yaml with the SAM CLI and cfn-lint (`sam validate --lint`), offline.
# Fails (exit 1) on any lint finding, warnings included. The dummy credentials and fixed region
# only stop the SAM CLI from looking for real ones: --lint makes no AWS calls.
# Extra arguments go to `sam validate` (e.g. --debug).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh
env -u AWS_PROFILE -u AWS_SESSION_TOKEN \
  AWS_DEFAULT_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=x \
  AWS_SECRET_ACCESS_KEY=x \
  SAM_CLI_TELEMETRY=0 \
  .venv/bin/sam validate --lint --template template.yaml "$@"
