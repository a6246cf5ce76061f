#!/usr/bin/env bash
# `make build`: builds the three functions as the deploy will, with `sam build` and the template's
# rust-cargolambda build method (a SAM CLI beta feature), using the project's own tools: the SAM
# CLI, cargo-lambda and zig from PyPI in .venv (requirements-deploy.txt, nothing else), put on PATH
# here, so nothing needs activating. ARCH (x86_64 or arm64, default x86_64) goes to both `sam build`
# and the template's Architecture parameter; `make deploy` passes the same value to `sam deploy`.
# Portable: bash 3.2 and BSD tools (macOS) as well as GNU ones (scripts/check-deploy-path.py).
# Leaves .aws-sam/build/<LogicalId>/bootstrap (what `sam deploy` uploads) and
# target/lambda/<binary>/bootstrap, and prints each bootstrap's size.
# Extra arguments go to `sam build` (e.g. --debug).
set -euo pipefail
cd "$(dirname "$0")/.."

arch=${ARCH:-x86_64}
case "$arch" in
  x86_64) rust_target=x86_64-unknown-linux-gnu ;;
  arm64) rust_target=aarch64-unknown-linux-gnu ;;
  *) echo "ARCH must be x86_64 or arm64, not '$arch'" >&2; exit 2 ;;
esac

scripts/venv.sh deploy
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$rust_target"; then
  echo "the Rust standard library for $rust_target is not installed: rustup target add $rust_target" >&2
  exit 1
fi
scripts/zig-wrapper.sh
export PATH="$PWD/.venv/bin:$PATH"
export SAM_CLI_TELEMETRY=0

# The region only stops the SAM CLI from asking for one; building makes no AWS call.
AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-${AWS_REGION:-us-east-1}} \
  sam build --beta-features --template template.yaml \
  --parameter-overrides "Architecture=$arch" "$@"

status=0
for pair in AdminFunction:admin-api DispatchFunction:dispatch ProbeFunction:probe; do
  id=${pair%%:*}
  bin=${pair#*:}
  for file in ".aws-sam/build/$id/bootstrap" "${CARGO_TARGET_DIR:-target}/lambda/$bin/bootstrap"; do
    if [ -x "$file" ]; then
      printf '%-40s %d bytes\n' "$file" "$(wc -c <"$file" | tr -d ' ')"
    else
      echo "missing: $file" >&2
      status=1
    fi
  done
done
exit "$status"
