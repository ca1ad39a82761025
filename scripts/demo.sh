#!/usr/bin/env bash
# The main job on a fresh machine: install, get tiny Shakespeare, train the default model,
# print a sample and draw a temperature sweep. Without internet, set CHARRNN_DATA_MIRROR to a
# folder holding tinyshakespeare.txt (e.g. CHARRNN_DATA_MIRROR=../shared/data).
# Every invocation trains a fresh model into its own folder (checkpoints/shakespeare-demo-<UTC time>),
# so the demo runs again as often as you like and never touches an earlier run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
charrnn data get shakespeare
run="checkpoints/shakespeare-demo-$(date -u +%Y%m%d-%H%M%S)"
while [ -e "$run" ]; do run="$run-x"; done  # two demos started within the same second
charrnn train data/shakespeare.txt --out "$run" ${CHARRNN_DEMO_TRAIN_ARGS:-}
charrnn sample -c "$run" -t 0.5 -n 600 --seed 1 --prime "ROMEO:"
if charrnn sweep --help >/dev/null 2>&1; then
  charrnn sweep -c "$run" --out "$run/sweep"
fi
echo "the demo's run: $run"
