#!/usr/bin/env bash
# `make deploy`: `make build` (sam build, rust-cargolambda), then `sam deploy --guided` with the
# same ARCH, using the SAM CLI from .venv. Needs AWS credentials and a region (see README,
# "Deploy to AWS"). Extra arguments go to `sam deploy` (e.g. --profile, --region).
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${ARCH:-x86_64}
ARCH=$arch scripts/sam-build.sh
export PATH="$PWD/.venv/bin:$PATH"
export SAM_CLI_TELEMETRY=0
# The built template (.aws-sam/build/template.yaml) points at the built bootstraps; the
# Architecture override keeps the deployed functions on the instruction set they were built for.
sam deploy --guided --parameter-overrides "Architecture=$arch" "$@"
