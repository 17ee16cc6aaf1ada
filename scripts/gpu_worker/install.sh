#!/usr/bin/env bash
# Install one lane of a GPU worker from its wheelhouse parts (wheelhouse.py build), with no network:
#   scripts/gpu_worker/install.sh [--force] [--lane vllm|build] PARTS_DIR [ENV_DIR]
#   (ENV_DIR default: /opt/enginewright-vllm, or /opt/enginewright-build for the build lane)
# Each lane is a venv of its own that also sees the image's packages (torch 2.11.0+cu130, CUDA libraries) through a
# .pth line placed after its own site-packages: what the wheelhouse carries (e.g. vLLM's numba 0.65) shadows the
# image's, and nothing of the image is changed. The build lane also sees this repository (another .pth line) and
# gets an `enginewright` command. Re-running is safe: a finished environment is kept unless --force.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
force=0
lane=vllm
while [ $# -gt 0 ]; do
  case "$1" in
    --force) force=1; shift ;;
    --lane) lane="${2:?--lane needs vllm or build}"; shift 2 ;;
    *) break ;;
  esac
done
case "$lane" in
  vllm) probe="import vllm; print('vLLM', vllm.__version__)" ;;
  build) probe="import enginewright, prefect, mlflow, modelopt, lm_eval; print('prefect', prefect.__version__, '| mlflow', mlflow.__version__, '| modelopt', modelopt.__version__)" ;;
  *) echo "install: --lane $lane: expected vllm or build" >&2; exit 2 ;;
esac
parts="${1:?usage: install.sh [--force] [--lane vllm|build] PARTS_DIR [ENV_DIR]}"
env_dir="${2:-/opt/enginewright-$lane}"
python="${PYTHON:-python3}"
if [ "$force" = 0 ] && [ -x "$env_dir/bin/python" ] && held="$("$env_dir/bin/python" -c "$probe" 2>/dev/null)"; then
  echo "install: $env_dir already holds $held"
  exit 0
fi
"$python" "$here/wheelhouse.py" check "$parts" || { echo "install: $parts is incomplete (above); nothing installed" >&2; exit 1; }
wheels="$(mktemp -d)"
trap 'rm -rf "$wheels"' EXIT
echo "install: unpacking $(cat "$parts/PARTS") parts"
cat "$parts"/wheelhouse.tar.xz.part-* | xz -d -T0 | tar -x -C "$wheels"
rm -rf "$env_dir"
"$python" -m venv "$env_dir"
image_site="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
env_site="$("$env_dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$image_site" > "$env_site/zz-worker-image.pth"  # .pth paths go after the venv's own site-packages
echo "install: $(ls "$wheels" | wc -l) wheels into $env_dir (the image's packages visible from $image_site)"
"$env_dir/bin/python" -m pip install --quiet --no-index --no-deps --disable-pip-version-check "$wheels"/*.whl
if [ "$lane" = vllm ] && ! "$env_dir/bin/python" -c "import flashinfer" 2>/dev/null; then
  # The trimmed set has no FlashInfer, but vLLM 0.26.0's V2 model runner imports it for its sampler unless
  # VLLM_USE_FLASHINFER_SAMPLER=0 (vllm/v1/sample/ops/topk_topp_sampler.py, flashinfer_sampler_supported): set for
  # every process of this environment (vllm serve, its engine core, the scorer), by a .pth line.
  echo 'import os; os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")' > "$env_site/zz-no-flashinfer-sampler.pth"
fi
if [ "$lane" = build ]; then
  # enginewright from this checkout (no build backend needed offline): on the path, with its console command
  echo "$repo" > "$env_site/enginewright-checkout.pth"
  printf '#!%s\nimport sys\nfrom enginewright.cli.main import main\nsys.exit(main())\n' "$env_dir/bin/python" > "$env_dir/bin/enginewright"
  chmod +x "$env_dir/bin/enginewright"
fi
"$env_dir/bin/python" -c "import torch; $probe; print('torch', torch.__version__, '| CUDA', torch.cuda.is_available())" | sed 's/^/install: /'
