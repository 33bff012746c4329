#!/usr/bin/env bash
# Run inlet's tests with the Python reader and Tansu broker located by install-test-deps.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ENV_FILE="${INLET_VENV:-$HOME/.cache/inlet/venv}/inlet-test.env"
[ -f "$ENV_FILE" ] || { echo "missing $ENV_FILE: run scripts/install-test-deps.sh first" >&2; exit 1; }
# shellcheck source=/dev/null
source "$ENV_FILE"
export INLET_TEST_PYTHON INLET_TEST_TANSU
exec cargo nextest run --workspace --profile ci "$@"
