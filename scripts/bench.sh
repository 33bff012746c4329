#!/usr/bin/env bash
# End-to-end throughput bench (not part of the test suite): preloads a topic
# on an in-process mock cluster, then times a bare rdkafka consumer, Parquet
# encoding alone, and `inlet run --available-now`, and prints inlet's rate as a
# ratio of each, per run and as medians. Flags: --messages N (default
# 2000000), --partitions N (64), --runs N (3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --locked --bin inlet
exec cargo bench --locked --bench e2e -- --inlet target/release/inlet "$@"
