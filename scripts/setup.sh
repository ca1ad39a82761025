#!/usr/bin/env bash
# Create .venv (if needed) and install charrnn with its test tools into it.
# torch is installed first and pinned: a bare `torch` requirement can pull a multi-GB CUDA build
# on machines whose index serves one by default. Override with CHARRNN_TORCH_SPEC (e.g. "torch").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
pip_quiet() { pip install --disable-pip-version-check -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
pip_quiet "${CHARRNN_TORCH_SPEC:-torch==2.13.0}"
pip_quiet -e ".[test,serve]"
# The playground's browser tests drive the system's Chromium (never a downloaded one).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null
fi
python -c "import torch, charrnn; print(f'charrnn {charrnn.__version__}, torch {torch.__version__}')"
