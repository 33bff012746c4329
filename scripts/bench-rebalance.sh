#!/usr/bin/env bash
# Rows per second during a rolling restart of three `inlet run` members, with
# eager rebalancing, cooperative-sticky and the KIP-848 consumer protocol, one
# after the other in one run, on librdkafka's mock cluster (debug build, as the
# tests). Not part of the default tests. Prints one line per protocol.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo nextest run --profile ci --test integration --run-ignored ignored-only \
    --success-output immediate rebalance::bench_rolling_restart "$@"
