#!/usr/bin/env bash
# Create .venv (if needed) and install charrnn with its test tools into it.
# torch is installed first and pinned: a bare `torch` requirement can pull a multi-GB CUDA build
# on machines whose index serves one by default. Override with CHARRNN_TORCH_SPEC (e.g. "torch").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# The browser tests (the explain page, the playground) drive headless Chromium,
# installed from the distribution (never downloaded at test time); only when missing, only with apt.
if ! { command -v chromium >/dev/null && command -v chromedriver >/dev/null; } && command -v apt-get >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo "sudo")
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null \
    || echo "warning: could not install chromium; the browser test will be skipped" >&2
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
pip_quiet() { pip install --disable-pip-version-check -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
pip_quiet "${CHARRNN_TORCH_SPEC:-torch==2.13.0}"
pip_quiet -e ".[test,export,tensorboard,serve]"  # the optional extras too, so their tests run
python -c "import torch, charrnn; print(f'charrnn {charrnn.__version__}, torch {torch.__version__}')"
