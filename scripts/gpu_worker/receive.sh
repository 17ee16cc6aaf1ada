#!/usr/bin/env bash
# Gather parts carried over several calls on a warm GPU machine (each call carries ≤ 64 MiB):
#   scripts/gpu_worker/receive.sh CARRIED_DIR [STORE]      (STORE default: /tmp/enginewright-parts)
# CARRIED_DIR holds one folder per group (wheelhouse/, bundle/, ...), each with some of its parts and its
# SHA256SUMS/PARTS; they are merged into STORE/<group>/ and each group's state is printed.
set -euo pipefail
src="${1:?usage: receive.sh CARRIED_DIR [STORE]}"
store="${2:-/tmp/enginewright-parts}"
for group in "$src"/*/; do
  name="$(basename "$group")"
  mkdir -p "$store/$name"
  cp -f "$group"* "$store/$name/"
done
for group in "$store"/*/; do
  echo "receive: $(basename "$group"): $(ls "$group" | grep -c -- '.part-') of $(cat "$group/PARTS" 2>/dev/null || echo '?') parts"
done
