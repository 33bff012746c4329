#!/usr/bin/env bash
# Run inlet's test suite: install what the tests need (idempotent, a few
# seconds when already done), then run every test with cargo-nextest. The
# tests find the DuckDB reader, the Tansu broker and SeaweedFS through the env
# file the installer writes, and fail (rather than skip) if one is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-test-deps.sh
ENV_FILE="${INLET_VENV:-$HOME/.cache/inlet/venv}/inlet-test.env"
[ -f "$ENV_FILE" ] || { echo "missing $ENV_FILE after install" >&2; exit 1; }
# shellcheck source=/dev/null
source "$ENV_FILE"
export INLET_TEST_PYTHON INLET_TEST_TANSU INLET_TEST_WEED
export INLET_TEST_REQUIRE_ALL=1
# Guardrails first, so that the test runner's summary is the last word:
# formatting, clippy on every target (tests, benches, binaries), and the
# documentation examples. INLET_SKIP_LINT=1 skips them for a quick local run.
if [ "${INLET_SKIP_LINT:-0}" != 1 ]; then
  echo "lint: cargo fmt --check"
  cargo fmt --all -- --check
  echo "lint: cargo clippy --all-targets -- -D warnings"
  cargo clippy --all-targets --quiet -- -D warnings
  echo "doctests: cargo test --doc"
  cargo test --doc --quiet
fi
exec cargo nextest run --workspace --profile ci "$@"
