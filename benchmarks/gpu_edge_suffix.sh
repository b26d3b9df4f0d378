#!/usr/bin/env bash
# The edge suffix on a GPU machine, in one run: the equivalence tests with the CPU provider (as on any
# host), then the suffix against the CPU path on CUDA, timed and compared (make bench-edges).
# Needs onnxruntime-gpu (`make install-gpu`) and the model in ~/.cache/cvunet-matting/models (or
# CVUNET_MODEL_DIR). Usage: bash benchmarks/gpu_edge_suffix.sh [python]   (default .venv/bin/python)
set -euo pipefail
PYTHON=${1:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -c 'import onnxruntime as o; print(o.__version__, o.get_available_providers())'
# On the CPU provider: the suffix's outputs against the CPU functions (tests/test_edge_suffix.py).
"$PYTHON" -m pytest -p no:cacheprovider -q tests/test_edge_suffix.py
# On CUDA: both paths timed in one run, median of 5, and how far apart their cut-outs are.
CVUNET_DEVICE=cuda "$PYTHON" benchmarks/bench_edge_suffix.py --sizes 1024x1024,1600x1200,4000x3000 --repeat 5 --whole
