#!/usr/bin/env bash
# A longer fuzz run of the decoders (src/decode/fuzz.rs, the key decoders in
# src/conform/key.rs): INPUTS inputs per target (default 2,000,000; CI runs
# 100,000 of each as part of the test suite). Every run prints its seed;
# INLET_FUZZ_SEED=<u64> replays it. A failure prints the smallest chunk
# proptest shrank it to: keep that input as a regression test in
# src/decode/tests.rs.
#
#   scripts/fuzz.sh            # every target
#   scripts/fuzz.sh avro       # targets whose name contains "avro"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export INLET_FUZZ_INPUTS="${INPUTS:-2000000}"
filter="${1:-fuzz_}"
# The dev profile by default (dependencies at opt-level 1, already built for
# the tests); FUZZ_PROFILE=release is faster per input after a long build.
exec cargo nextest run --lib --cargo-profile "${FUZZ_PROFILE:-dev}" \
  --success-output final -E "test(/fuzz_/) and test(/${filter}/)"
