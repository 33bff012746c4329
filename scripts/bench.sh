#!/usr/bin/env bash
# Benchmarks (not part of the test suite), release build.
#
#   scripts/bench.sh [--messages N] [--partitions N] [--runs N] [--baseline BIN]
#     End-to-end: preloads a topic on an in-process mock cluster, then per run
#     times a bare rdkafka consumer, Parquet encoding alone, and
#     `inlet run --available-now` (and, with --baseline, another inlet binary,
#     e.g. the previous commit's), printing inlet's rate as a ratio of each,
#     per run and as medians. Defaults: 2000000 messages, 128 partitions, 3 runs.
#   scripts/bench.sh --micro
#     criterion micro-benchmarks of the hot path's stages (benches/hot_path.rs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ "${1:-}" = "--micro" ]; then
  shift
  exec cargo bench --locked --bench hot_path -- "$@"
fi
cargo build --release --locked --bin inlet
exec cargo bench --locked --bench e2e -- --inlet target/release/inlet "$@"
