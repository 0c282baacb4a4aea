#!/usr/bin/env bash
# Issue 15's GPU check, as one short script for a lent device machine (Python 3.12 with a CUDA
# torch, no flwr, no Ray, nothing fetchable): bench/speed.py on the in-process engine, PFedRec on
# ML-100K, the clients on the GPU and then on that machine's CPU, the same rounds each.
# Flower's Ray engine cannot go there: Ray's wheel for Python 3.12 is 73.8 MB, over the 64 MiB
# a device call carries (docs/benchmark.md, "GPU").
#
# Here, once per checkout (downloads the 15 wheels the device lacks into .whl/ and copies the
# cached ML-100K split into .cache/gpu-check/; both are git-ignored, ~20 MB together):
#     bash bench/gpu_check.sh prepare
# There (device tool: run, carry [".whl", ".cache/gpu-check"], timeout_s 600):
#     bash bench/gpu_check.sh run
# Figures land in $OUT: gpu.txt (GPU, driver, torch), speed-cuda.json, speed-cpu.json, log.txt.
#
# Settings (environment): ROUNDS (default 8), DEVICES (default "cuda cpu"), PY (default python3),
# SKIP_WHEELS=1 (use the packages already importable, e.g. a local check on CPU:
# `PY=.venv/bin/python SKIP_WHEELS=1 DEVICES=cpu OUT=/tmp/gpu bash bench/gpu_check.sh run`),
# GPU_CHECK_CACHE (the FEDMM_CACHE to read the split from; default .cache/gpu-check).
set -euo pipefail
cd "$(dirname "$0")/.."

# What an in-process PFedRec run imports (python -X importtime) and the device image lacks,
# at the versions this project's install resolves to.
WHEELS=(flwr==1.42.0 cryptography==50.0.2 cffi==2.1.1 pycryptodome==3.24.1 iterators==0.0.2
        grpcio-health-checking==1.81.1 fastapi==0.138.2 starlette==1.3.1 pydantic==2.14.4
        pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
        SQLAlchemy==2.1.9 alembic==1.20.1 Mako==1.4.3)
CACHE=.cache/gpu-check

case "${1:-}" in
prepare)
    python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --platform manylinux_2_34_x86_64 \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
    # The split as run.py builds it (from the cache when it is there), then a copy to carry.
    src="${FEDMM_CACHE:-$HOME/.cache/fedmm}"
    FEDMM_CACHE="$src" .venv/bin/python -c "
from pathlib import Path
from fedmm.config import RunConfig, load_app_config
from fedmm.factory import data_for
data_for(RunConfig.from_mapping(load_app_config(Path('pyproject.toml'))))"
    mkdir -p "$CACHE/splits"
    cp "$src"/splits/ml-100k-* "$CACHE/splits/"
    du -sh .whl "$CACHE"
    ;;
run)
    : "${OUT:?OUT: the folder the figures go to (the device tool sets it)}"
    PY="${PY:-python3}"
    [ "${ROUNDS:-8}" -ge 2 ] || { echo "ROUNDS must be >= 2 (bench/speed.py leaves round 1 out of its median)" >&2; exit 2; }
    if [ "${SKIP_WHEELS:-0}" != 1 ]; then
        ls .whl/*.whl >/dev/null 2>&1 || { echo "no .whl/*.whl: run 'bash bench/gpu_check.sh prepare' here and carry .whl" >&2; exit 2; }
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl
        export PYTHONPATH=/tmp/site
    fi
    export FEDMM_CACHE="${GPU_CHECK_CACHE:-$PWD/$CACHE}" PYTHONUNBUFFERED=1
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
      "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    } > "$OUT/gpu.txt"
    for dev in ${DEVICES:-cuda cpu}; do
        "$PY" bench/speed.py --engine inprocess --device "$dev" --backbones pfedrec \
            --rounds "${ROUNDS:-8}" --out "$OUT/speed-$dev.json" 2>&1 | tee -a "$OUT/log.txt"
    done
    ;;
*)
    echo "usage: bash bench/gpu_check.sh prepare|run (see the top of this file)" >&2
    exit 2
    ;;
esac
