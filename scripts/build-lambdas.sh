#!/usr/bin/env bash
# Builds the three Lambda functions (admin-api, dispatch, probe) as release zips with cargo-lambda,
# linked through zig for Amazon Linux 2023 (provided.al2023, glibc 2.34) on x86_64, then prints each
# zip's path and size and fails if any is over MAX_ZIP_BYTES (10 MB by default).
# cargo-lambda and zig come from PyPI (requirements-deploy.txt) into .venv. Extra arguments go to
# `cargo lambda build` (e.g. --verbose). `make zips` runs it; `make build` is `sam build`.
set -euo pipefail
cd "$(dirname "$0")/.."

# glibc 2.34 is Amazon Linux 2023's; only the x86_64 Rust standard library is installed here.
target=x86_64-unknown-linux-gnu.2.34
max_bytes=${MAX_ZIP_BYTES:-10000000}
binaries=(admin-api dispatch probe)

scripts/venv.sh deploy
scripts/zig-wrapper.sh
export PATH="$PWD/.venv/bin:$PATH"

bin_args=()
for bin in "${binaries[@]}"; do bin_args+=(--bin "$bin"); done
cargo lambda build --release --target "$target" --output-format zip "${bin_args[@]}" "$@"

target_dir=${CARGO_TARGET_DIR:-target}
status=0
for bin in "${binaries[@]}"; do
  zip="$target_dir/lambda/$bin/bootstrap.zip"
  if [ ! -f "$zip" ]; then
    echo "missing: $zip" >&2
    status=1
    continue
  fi
  size=$(wc -c <"$zip" | tr -d ' ')
  printf '%-10s %s  %d bytes (%s MB)\n' "$bin" "$zip" "$size" "$(awk "BEGIN{printf \"%.1f\", $size/1000000}")"
  if [ "$size" -gt "$max_bytes" ]; then
    echo "  over the limit of $max_bytes bytes" >&2
    status=1
  fi
done
exit "$status"
