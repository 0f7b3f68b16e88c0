#!/usr/bin/env bash
# Creates the benchmark's own interpreter for the OFA reference search (reference_runner.py).
# The reference package is installed WITHOUT its dependencies (it pins old torchvision etc.);
# the runner loads only its tutorial modules, which need torch, numpy, pyyaml and tqdm.
#   usage: bash benchmarks/search_vs_reference/setup_refvenv.sh [VENV_DIR]   (default /work/refvenv-bench)
set -euo pipefail
VENV="${1:-/work/refvenv-bench}"
PY="${PYTHON:-python3}"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q "torch==2.13.0" numpy pyyaml tqdm
"$VENV/bin/pip" install -q --no-deps "ofa==0.1.0.post202307202001"
"$VENV/bin/python" -c "import importlib.util as u; assert u.find_spec('ofa'), 'ofa missing'; print('ok')"
