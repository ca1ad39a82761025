#!/usr/bin/env bash
# The main job on a fresh machine: install, get tiny Shakespeare, train the default model,
# print a sample and draw a temperature sweep. Without internet, set CHARRNN_DATA_MIRROR to a
# folder holding tinyshakespeare.txt (e.g. CHARRNN_DATA_MIRROR=../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
charrnn data get shakespeare
charrnn train data/shakespeare.txt --out checkpoints/shakespeare-demo ${CHARRNN_DEMO_TRAIN_ARGS:-}
charrnn sample -c checkpoints/shakespeare-demo -t 0.5 -n 600 --seed 1 --prime "ROMEO:"
if charrnn sweep --help >/dev/null 2>&1; then
  charrnn sweep -c checkpoints/shakespeare-demo --out checkpoints/shakespeare-demo/sweep
fi
