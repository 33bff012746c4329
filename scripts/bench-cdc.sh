#!/usr/bin/env bash
# The change data capture benches of issue 11 (benches/cdc.rs), end to end
# through a release `inlet run --available-now` on librdkafka's mock cluster.
# Not part of the test suite.
#
#   scripts/bench-cdc.sh [--only upsert|debezium]
#
# Sizes and options are environment variables (defaults: the issue's sizes):
#   CDC_KEYS=1000000 CDC_CHANGES=9000000 CDC_CHANGED=0.01 CDC_RUNS=3
#   CDC_PARTITIONS=256               the upsert bench (load, then changes)
#   DBZ_SNAPSHOT=100000 DBZ_CHANGES=1000000 DBZ_BATCH=10000 DBZ_PARTITIONS=256
#   CDC_PROPERTIES='delta.enableDeletionVectors=true'   merged tables' properties
#   CDC_KEEP=DIR                     keep the tables (and values) under DIR
#   INLET_TEST_PYTHON                a Python with duckdb for the end-state checks
#                                    (sourced from ~/.cache/inlet/venv/inlet-test.env
#                                    when unset and that file exists)
#   INLET_RELEASE_TARGET_DIR         target dir of the release inlet build
#                                    (default: CARGO_TARGET_DIR, else target)
# The bench harness (which hosts the mock cluster and produces the data) is
# built in the dev profile (CDC_HARNESS_PROFILE to change): only inlet is timed.
# A quick pass:
#   CDC_KEYS=100000 CDC_CHANGES=900000 CDC_RUNS=3 DBZ_SNAPSHOT=10000 \
#     DBZ_CHANGES=100000 DBZ_BATCH=1000 scripts/bench-cdc.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -z "${INLET_TEST_PYTHON:-}" && -f ~/.cache/inlet/venv/inlet-test.env ]]; then
  # shellcheck disable=SC1090
  source ~/.cache/inlet/venv/inlet-test.env
  export INLET_TEST_PYTHON
fi
release="${INLET_RELEASE_TARGET_DIR:-${CARGO_TARGET_DIR:-target}}"
CARGO_TARGET_DIR="$release" cargo build --release --locked --bin inlet
exec cargo bench --locked --profile "${CDC_HARNESS_PROFILE:-dev}" --bench cdc -- \
  --inlet "$release/release/inlet" "$@"
