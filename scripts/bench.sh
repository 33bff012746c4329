#!/usr/bin/env bash
# Benchmarks (not part of the test suite), release build.
#
#   scripts/bench.sh [--messages N] [--partitions N] [--runs N] [--baseline BIN]
#                    [--config TOML_LINE]... [--no-limits] [--format json|avro]
#     End-to-end: preloads a topic on an in-process mock cluster, then per run
#     times a bare rdkafka consumer, Parquet encoding alone, and
#     `inlet run --available-now` (and, with --baseline, another inlet binary,
#     e.g. the previous commit's), printing inlet's rate as a ratio of each and
#     inlet's peak RSS, per run and as medians. Defaults: 2000000 messages,
#     128 partitions, 3 runs. --config appends a line to inlet's config;
#     --no-limits skips the raw-consume and encode-only runs. The 10M-message
#     RSS check: --messages 10000000 --partitions 512 --runs 1 --no-limits
#   scripts/bench.sh --micro [CRITERION ARGS]
#     criterion micro-benchmarks of the hot path's stages (benches/hot_path.rs).
#   scripts/bench.sh --growth [--versions 100,5000,20000] [--partitions 256]
#                   [--files-per-commit 5] [--commits 20]
#     per-commit cost of inlet's commit path (refresh, stored versions,
#     fencing check, log write) and peak RSS as the table's log grows
#     (benches/growth.rs writes a realistic log directly).
#   scripts/bench.sh --latency [--rate N] [--seconds S] [--partitions P] [--max-age D]
#     `inlet run` with flush.max_age 1s under a steady produce rate (default
#     3000 msg/s for 30 s): p50/p99/max of produce → visible in the table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target="${CARGO_TARGET_DIR:-target}"
case "${1:-}" in
  --micro)
    shift
    exec cargo bench --locked --bench hot_path -- "$@"
    ;;
  --growth)
    shift
    exec cargo bench --locked --bench growth -- "$@"
    ;;
  --latency)
    shift
    cargo build --release --locked --bin inlet
    exec cargo bench --locked --bench latency -- --inlet "$target/release/inlet" "$@"
    ;;
esac
cargo build --release --locked --bin inlet
exec cargo bench --locked --bench e2e -- --inlet "$target/release/inlet" "$@"
