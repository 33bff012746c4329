#!/usr/bin/env bash
# Benchmarks (not part of the test suite), release build.
#
#   scripts/bench.sh [--messages N] [--partitions N] [--tables N] [--runs N]
#                    [--baseline BIN] [--config TOML_LINE]... [--no-limits]
#                    [--format json|avro]
#     End-to-end: preloads topics on an in-process mock cluster, then per run
#     times the raw C consumers (rdkafka_performance and kcat, on inlet's
#     librdkafka), `inlet run --available-now` (and, with --baseline, another
#     inlet binary, e.g. the previous commit's), a bare rdkafka consumer and
#     Parquet encoding alone, printing inlet's rate and CPU per message as
#     ratios of each and inlet's peak RSS, per run and as medians. Defaults:
#     2000000 messages, 128 partitions, 1 table, 3 runs. --tables N spreads the
#     partitions over N topics and tables in one inlet process. --config
#     appends a line to inlet's config; --no-limits skips the in-process
#     raw-consume and encode-only runs. The 10M-message RSS check:
#     --messages 10000000 --partitions 512 --runs 1 --no-limits
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
#   scripts/bench.sh --scaleout
#     1, 2 and 4 `inlet run` processes in one group on one S3 table
#     (SeaweedFS, INLET_TEST_WEED): aggregate rows/s, then the commit-rate
#     sweep (smaller flushes, more processes) up to the table's ceiling, each
#     run checked exactly once (benches/scaleout.rs). Sizes by SCALEOUT_*
#     variables: MESSAGES, PARTITIONS, PROCESSES, RUNS, MAX_ROWS, MAX_AGE,
#     SWEEP_PROCESSES, SWEEP_ROWS, SWEEP_SECONDS. The harness (it hosts the
#     mock cluster) builds in the dev profile.
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
  --scaleout)
    shift
    if [[ -z "${INLET_TEST_WEED:-}" && -f ~/.cache/inlet/venv/inlet-test.env ]]; then
      # shellcheck disable=SC1090
      source ~/.cache/inlet/venv/inlet-test.env
      export INLET_TEST_WEED
    fi
    cargo build --release --locked --bin inlet
    exec cargo bench --locked --profile dev --bench scaleout -- --inlet "$target/release/inlet" "$@"
    ;;
esac
cargo build --release --locked --bin inlet
# The raw C references, on the librdkafka inlet links (the one rdkafka-sys
# vendors and built for this release build): librdkafka's own
# examples/rdkafka_performance.c linked against that static library, and
# kcat (Debian's package, installed when missing) loading that library's
# shared build through LD_LIBRARY_PATH instead of the system's older one.
out=$(ls -td "$target"/release/build/rdkafka-sys-*/out 2>/dev/null | head -1)
raw=()
if [[ -n "$out" && -f "$out/src/librdkafka.a" ]]; then
  perf_bin="$target/release/rdkafka_performance"
  if [[ ! -x "$perf_bin" || "$out/src/librdkafka.a" -nt "$perf_bin" ]]; then
    # The library's own CFLAGS and LIBS (zstd comes from zstd-sys's build).
    ldflags=$(sed -n 's/^LDFLAGS+=//p' "$out/Makefile.config")
    libs=$(sed -n 's/^LIBS+=//p' "$out/Makefile.config")
    # shellcheck disable=SC2086
    cc -O2 -I"$out/src" "$out/examples/rdkafka_performance.c" -o "$perf_bin" \
      "$out/src/librdkafka.a" $ldflags $libs
  fi
  raw+=(--rdkafka-performance "$perf_bin")
  if ! command -v kcat >/dev/null && command -v apt-get >/dev/null; then
    apt-get install -y kcat >/dev/null || echo "kcat not installed: left out" >&2
  fi
  if command -v kcat >/dev/null; then
    raw+=(--kcat "$(command -v kcat)" --librdkafka "$out/src")
  fi
else
  echo "no librdkafka build under $target/release/build: raw C references left out" >&2
fi
exec cargo bench --locked --bench e2e -- --inlet "$target/release/inlet" "${raw[@]}" "$@"
