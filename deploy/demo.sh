#!/usr/bin/env bash
# `make demo`: the whole job on its own data, end to end, in a few minutes on two CPU cores:
# a synthetic scene in UCSD layout -> train -> calibrate -> export a bundle -> replay a test clip through
# `edge-ad run` while `edge-ad subscribe` prints the alerts -> evaluate against the baselines.
set -euo pipefail
DEMO=${1:-demo}
BIN=${BIN:-.venv/bin}
SEED=${SEED:-7}
ENDPOINT=${ENDPOINT:-tcp://127.0.0.1:5556}
mkdir -p "$DEMO"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
START=$(date +%s)

step "1/6 synthetic scene (seed $SEED, one of the scenes the scoring was chosen on: README, Results)"
"$BIN/edge-ad" synth "$DEMO/data" --train 12 --test 6 --frames 160 --seed "$SEED" --force
"$BIN/edge-ad" data info "$DEMO/data"

step "2/6 train the VQ-VAE and its prior on the normal clips, then calibrate"
rm -rf "$DEMO/run"
"$BIN/edge-ad" train --config configs/synthetic.yaml --data "$DEMO/data" --out "$DEMO/run"

step "3/6 export the bundle (ONNX graphs, parity gate, TensorRT readiness)"
"$BIN/edge-ad" export --run "$DEMO/run" --out "$DEMO/bundle" --force

step "4/6 replay a test clip through the runtime; the subscriber prints the alerts"
CLIP="$DEMO/data/Test/Test002"  # normal frames, then an anomaly arrives
"$BIN/edge-ad" subscribe --topic alert --endpoint "$ENDPOINT" &
SUB=$!
# the replay waits for its subscriber, so no alert is lost to ZeroMQ's slow-joiner window
"$BIN/edge-ad" run --bundle "$DEMO/bundle" --frames "$CLIP" --name demo --pace max \
  --endpoint "$ENDPOINT" --metrics-port 0 --journal "$DEMO/alerts" --set runtime.wait_subscribers=1
sleep 0.5
kill "$SUB" 2>/dev/null || true
wait "$SUB" 2>/dev/null || true
echo "alert journal: $DEMO/alerts/alerts.jsonl ($(wc -l < "$DEMO/alerts/alerts.jsonl" 2>/dev/null || echo 0) events)"

step "5/6 evaluate the bundle against frame differencing and MOG2 on every test clip"
"$BIN/edge-ad" eval --bundle "$DEMO/bundle" --data "$DEMO/data" --out "$DEMO/report"

step "6/6 done in $(( $(date +%s) - START )) s: report in $DEMO/report/report.md"
