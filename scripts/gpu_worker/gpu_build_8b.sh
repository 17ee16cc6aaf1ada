#!/usr/bin/env bash
# Issue 30's GPU figure in one go, on a GPU worker that received the build lane's wheelhouse and the inputs
# (a tokenizer folder named `tokenizer` and the shared data) into PARTS with receive.sh:
#   scripts/gpu_worker/gpu_build_8b.sh PARTS OUT [benchmarks/gpu_build.py flags, e.g. --tasks arc_easy,hellaswag]
# It installs the build lane (once per machine), unpacks the inputs, then runs benchmarks/gpu_build.py on the
# Llama-3-8B-shaped model (random bf16 weights, the tokenizer's vocabulary) with every local document of ARC-Easy,
# ARC-Challenge, HellaSwag and MMLU, and ModelOpt alone beside it (--bare). OUT gets 8b.json and the log.
# Staged here (a machine with this checkout's .venv) with:
#   .venv/bin/python -c 'from pathlib import Path; from tests.tiny_model import save_smollm2_tokenizer as s; s(Path("/tmp/stage/tokenizer"))'
#   python3 scripts/gpu_worker/wheelhouse.py build .gpu/build-wheelhouse --lane build
#   python3 scripts/gpu_worker/carry.py stage .gpu/stage/inputs /tmp/stage/tokenizer ../shared/data
#   python3 scripts/gpu_worker/carry.py split .gpu/carries .gpu/build-wheelhouse .gpu/stage/inputs --mb 61
set -euo pipefail
cd "$(dirname "$0")/../.."
parts="${1:?usage: gpu_build_8b.sh PARTS OUT [gpu_build.py flags]}"
out="${2:?usage: gpu_build_8b.sh PARTS OUT [gpu_build.py flags]}"
shift 2
lane=/tmp/ew-build inputs=/tmp/ew-inputs
mkdir -p "$out"
[ -x "$lane/bin/python" ] || scripts/gpu_worker/install.sh --lane build "$parts/build-wheelhouse" "$lane"
[ -d "$inputs/data" ] || python3 scripts/gpu_worker/carry.py unpack "$parts/inputs" "$inputs"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
ENGINEWRIGHT_HOME=/tmp/ew-8b ENGINEWRIGHT_SHARED_DATA_DIR="$inputs/data" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
  "$lane/bin/python" benchmarks/gpu_build.py --random-llama8b --tokenizer "$inputs/tokenizer" --max-drop 100 \
  --batch-size 64 --bare --out "$out/8b.json" "$@" 2>&1 | tee "$out/gpu_build.log"
