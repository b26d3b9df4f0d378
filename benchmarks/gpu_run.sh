#!/usr/bin/env bash
# On a lent GPU machine, once every part of benchmarks/gpu_payload.sh is in /tmp/p or under .whl/: unpack
# onnxruntime-gpu beside the image's own packages (PyTorch's CUDA 13 libraries serve it), then run the GPU
# benchmarks of the edge steps: the suffix alone and with the model (make bench-edges), and the overlapped
# worker's image work with the edge steps on the host or in the device process (bench_device_edges.py).
# Figures land in $OUT. Usage: bash benchmarks/gpu_run.sh
set -euo pipefail
P=/tmp/p
mkdir -p $P
cp .whl/p*/part.* $P/ 2>/dev/null || true
(cd $P && cat part.* | tar xf - && mkdir -p site && tar xJf ort.tar.xz -C site &&
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target site isal-*.whl)
export PYTHONPATH=$P/site:$PWD
packages=$(python3 -c 'import numpy, os; print(os.path.dirname(os.path.dirname(numpy.__file__)))')
LD_LIBRARY_PATH=$(find "$packages/nvidia" -name 'lib*.so*' -printf '%h\n' | sort -u | paste -sd:)
export LD_LIBRARY_PATH CVUNET_MODEL_DIR=$P CVUNET_DEVICE=cuda PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c 'import onnxruntime as o; print(o.__version__, o.get_available_providers())'
python3 benchmarks/bench_edge_suffix.py --sizes 1024x1024,1600x1200,4000x3000 --repeat 5 --whole 2>&1 | tee $OUT/edges.txt
python3 benchmarks/bench_device_edges.py --size 1600x1200 --images 96 --pools 4,8,14 --rounds 2 2>&1 |
  tee $OUT/device-1600.txt
python3 benchmarks/bench_device_edges.py --size 4000x3000 --images 32 --pools 8 --rounds 2 2>&1 | tee $OUT/device-4000.txt
