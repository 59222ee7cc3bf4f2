#!/usr/bin/env bash
# The GPU part of the benchmarks on a lent GPU machine, from a fresh checkout:
#
#   bash benchmarks/gpu_check.sh [--corpus RAVDESS_DIR] [other python -m benchmarks options]
#
# Python: the first of python3 / python (the system's), ./.venv, runs/venv-gpu that imports torch with
# CUDA and the project's dependencies. Only when none does is a virtual environment made
# (runs/venv-gpu, seeing the system's packages, so that a system CUDA torch is reused and pip
# has as little as possible to fetch). Then, within `timeout 540` (the part itself keeps
# to 7.5 minutes):
#
#   python -m benchmarks --only gpu --write-doc docs/benchmarks-gpu.md
#
# Results: the table on stdout, docs/benchmarks-gpu.md, runs/benchmarks/latest.json.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error TQDM_DISABLE=1

CUDA_TORCH='import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'
DEPS='import transformers, h5py, soundfile, sklearn, pandas, librosa, opensmile, featcache, estimators'

usable() {  # usable PYTHON: torch with CUDA and every dependency importable
    [ -x "$(command -v "$1" 2>/dev/null)" ] && "$1" -c "$CUDA_TORCH" 2>/dev/null && "$1" -c "$DEPS" 2>/dev/null
}

PY=""
for cand in python3 python ./.venv/bin/python ./runs/venv-gpu/bin/python; do
    if usable "$cand"; then PY="$cand"; break; fi
done
if [ -z "$PY" ]; then
    echo "[gpu_check] no python with CUDA torch and the dependencies: making runs/venv-gpu" >&2
    mkdir -p runs && python3 -m venv --system-site-packages runs/venv-gpu || { echo "[gpu_check] python3 -m venv failed" >&2; exit 2; }
    PY=./runs/venv-gpu/bin/python
    if ! "$PY" -c "$CUDA_TORCH" 2>/dev/null; then
        "$PY" -m pip install --quiet torch || echo "[gpu_check] pip could not install torch (no index reachable?)" >&2
    fi
    "$PY" -m pip install --quiet -e . || echo "[gpu_check] pip install -e . failed (no index reachable?)" >&2
    if ! usable "$PY"; then
        echo "[gpu_check] still missing: torch with CUDA or one of: $DEPS" >&2
        "$PY" -c "$CUDA_TORCH" || echo "[gpu_check] torch.cuda.is_available() is False (or torch is missing)" >&2
        "$PY" -c "$DEPS" >&2
        exit 2
    fi
fi
echo "[gpu_check] python: $PY ($("$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0))'))" >&2
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,utilization.gpu --format=csv >&2

start=$(date +%s)
timeout 540 "$PY" -m benchmarks --only gpu --write-doc docs/benchmarks-gpu.md "$@"
rc=$?
echo "[gpu_check] exit status $rc after $(( $(date +%s) - start )) s (124: killed by timeout 540)" >&2
exit $rc
