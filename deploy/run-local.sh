#!/usr/bin/env bash
# Run the four services as separate processes against a Kafka broker, with
# the example configs in this folder. Logs go to ./fleetpulse-local/*.log.
#
#   KAFKA=127.0.0.1:9092 deploy/run-local.sh        # Ctrl-C stops everything
#
# With no broker at hand, `fleetpulse up` runs the same pipeline in one
# process on an embedded broker.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export KAFKA=${KAFKA:-127.0.0.1:9092}
export FLEETPULSE__KAFKA__BROKERS="$KAFKA"
export FLEETPULSE_CONNECTOR_SECRET=${FLEETPULSE_CONNECTOR_SECRET:-local-demo-connector-secret}
export FLEETPULSE_PSEUDONYM_KEY=${FLEETPULSE_PSEUDONYM_KEY:-local-demo-pseudonym-key-change-me}
out=./fleetpulse-local
mkdir -p "$out"

cargo build --release -p fleetpulse-cli
bin=target/release/fleetpulse
"$bin" topics create --kafka "$KAFKA"

pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
"$bin" sim --config deploy/sim.toml >"$out/sim.log" 2>&1 & pids+=($!)
"$bin" process --config deploy/processor.toml >"$out/processor.log" 2>&1 & pids+=($!)
"$bin" alert --config deploy/alerter.toml >"$out/alerter.log" 2>&1 & pids+=($!)
"$bin" edge --config deploy/edge.toml >"$out/edge.log" 2>&1 & pids+=($!)
echo "running; logs in $out/, lake in ./fleetpulse-data/lake. Alerts:"
"$bin" alerts tail --kafka "$KAFKA"
