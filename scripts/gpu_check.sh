#!/usr/bin/env bash
# One command on a GPU machine: what the suite does there (see lib/attnrepro/gpu_check/ for the steps).
# No venv, no network: the machine's own python and torch with PYTHONPATH=lib. Writes OUT_DIR/gpu_check.json and
# OUT_DIR/gpu_check.txt (default reports/gpu-check/). DRY=1: every step on the CPU at tiny sizes.
# PYTHON names the interpreter (default python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD/lib${PYTHONPATH:+:$PYTHONPATH}"
args=(--out "${OUT_DIR:-reports/gpu-check}")
if [ -n "${DRY:-}" ] && [ "${DRY}" != 0 ]; then args+=(--dry-run); fi
exec "${PYTHON:-python3}" -m attnrepro.gpu_check "${args[@]}" "$@"
