#!/usr/bin/env bash
# Runs inlet end to end on an embedded default: starts a local Kafka-protocol
# broker (librdkafka's mock cluster), produces sample events, backfills them
# into ./data/events with `inlet run --available-now`, and shows what landed.
set -euo pipefail
cd "$(dirname "$0")/.."

count=${COUNT:-50000}
# The mock broker starts empty every time, so its offsets start at 0 again:
# start from a fresh table too (the old one's stored offsets would say done).
rm -rf data/events
cargo build --quiet --bins
bin=target/debug

# The broker lives as long as its stdin stays open.
coproc BROKER { exec "$bin/inlet-devkit" mock-broker --topic events:8; }
trap 'kill "${BROKER_PID}" 2>/dev/null || true' EXIT
read -r line <&"${BROKER[0]}"
bootstrap=${line#bootstrap=}
echo "broker on ${bootstrap}"

"$bin/inlet-devkit" produce --brokers "$bootstrap" --topic events --count "$count"

export INLET_KAFKA__BOOTSTRAP_SERVERS="$bootstrap"
"$bin/inlet" run -c configs/quickstart.toml --available-now

echo
"$bin/inlet-devkit" show data/events
echo
echo "Run it again: nothing new is committed (the offsets are read back from the table)."
"$bin/inlet" run -c configs/quickstart.toml --available-now
