#!/usr/bin/env bash
# Validates template.yaml offline, failing (exit 1) on any finding, warnings included:
#   1. `sam validate --lint` (the SAM translator and cfn-lint);
#   2. scripts/check-template.py: settings that pass 1 and the simulated stack but fail on AWS
#      (KMS key policy, DeletionPolicy, IAM actions against the code's AWS calls, alarms, the
#      README's redrive), and parliament on every IAM policy of the translated template;
#   3. checkov on the translated template (scripts/checkov.yaml: its settings and the skips).
# The dummy credentials and fixed region only stop the SAM CLI from looking for real ones: nothing
# here makes an AWS call. Extra arguments go to `sam validate` (e.g. --debug).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh
export AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x SAM_CLI_TELEMETRY=0
unset AWS_PROFILE AWS_SESSION_TOKEN
.venv/bin/sam validate --lint --template template.yaml "$@"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
.venv/bin/python scripts/check-template.py --translated "$tmp/template.json"
# BC_SKIP_MAPPING and skip-download: checkov would otherwise fetch its guidelines online.
BC_SKIP_MAPPING=TRUE .venv/checkov/bin/checkov --config-file scripts/checkov.yaml -f "$tmp/template.json"
