#!/usr/bin/env bash
# Creates .venv with the project's Python tools, installing only when a requirements file changed.
#   scripts/venv.sh deploy   the deploy toolchain only (requirements-deploy.txt: SAM CLI,
#                            cargo-lambda, zig): what `make build`, `make zips` and `make deploy` need
#   scripts/venv.sh          everything `make test` needs (requirements-dev.txt, which includes the
#                            deploy toolchain), plus checkov in .venv/checkov (requirements-checkov.txt)
# Needs only Python 3.10+ (PYTHON=python3.12 to choose one); no sudo, no system packages, Linux or macOS.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
set_name=${1:-dev}

# Each stamp holds the requirements it was installed from; the dev set includes the deploy set.
dev_wanted=$(cat requirements-dev.txt requirements-deploy.txt)
deploy_wanted=$(cat requirements-deploy.txt)
dev_stamp=.venv/.requirements-installed
deploy_stamp=.venv/.deploy-requirements-installed
stamp_is() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

pip_install() {
  if [ ! -x .venv/bin/python ]; then
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
      echo "$python is older than 3.10 (or missing): install Python 3.10+, or set PYTHON=python3.12" >&2
      exit 1
    fi
    "$python" -m venv .venv
  fi
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@"
}

case "$set_name" in
  deploy)
    if stamp_is "$deploy_stamp" "$deploy_wanted" || stamp_is "$dev_stamp" "$dev_wanted"; then
      exit 0
    fi
    pip_install -r requirements-deploy.txt
    printf '%s' "$deploy_wanted" >"$deploy_stamp"
    ;;
  dev)
    if ! stamp_is "$dev_stamp" "$dev_wanted"; then
      pip_install -r requirements-dev.txt
      printf '%s' "$dev_wanted" >"$dev_stamp"
      printf '%s' "$deploy_wanted" >"$deploy_stamp"
    fi
    checkov_wanted=$(cat requirements-checkov.txt)
    checkov_stamp=.venv/checkov/.requirements-installed
    if ! stamp_is "$checkov_stamp" "$checkov_wanted"; then
      [ -x .venv/checkov/bin/python ] || .venv/bin/python -m venv .venv/checkov
      .venv/checkov/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
      printf '%s' "$checkov_wanted" >"$checkov_stamp"
    fi
    ;;
  *)
    echo "usage: scripts/venv.sh [deploy]" >&2
    exit 2
    ;;
esac
