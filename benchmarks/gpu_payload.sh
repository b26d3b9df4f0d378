#!/usr/bin/env bash
# What a lent GPU machine (the `device` tool: PyTorch with CUDA 13, CPU onnxruntime, no network) lacks for
# the GPU benchmarks, cut to fit one call's 64 MiB carry: onnxruntime-gpu (its CUDA 13 build for Python
# 3.12, without the TensorRT provider and the Python tooling, xz-compressed: 203 MB), isal, and the ISNet
# fp16 model with its manifest. Written as .whl/p0 .. .whl/pN (60 MiB each; .whl/ is listed in
# .git/info/exclude so that it never travels unasked). Send them one call each while the machine stays
# warm (`mkdir -p /tmp/p && cp .whl/pK/part.* /tmp/p/`, carry [".whl/pK"]), then, carrying the last:
# `bash benchmarks/gpu_run.sh`. Takes ~3 minutes here (the xz pass). Usage: bash benchmarks/gpu_payload.sh
set -euo pipefail
ORT_GPU=${ORT_GPU:-onnxruntime-gpu==1.31.1}
MODEL=${MODEL:-$HOME/.cache/cvunet-matting/models/isnet-fp16.onnx}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/wheels" "$work/unpacked" "$work/payload"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$work/wheels" "$ORT_GPU" isal==1.9.1
unzip -q "$work"/wheels/onnxruntime_gpu-*.whl -d "$work/unpacked"
tar -C "$work/unpacked" --exclude='onnxruntime/transformers' --exclude='onnxruntime/quantization' \
  --exclude='onnxruntime/tools' --exclude='*tensorrt*' -cf - onnxruntime | xz -T0 -6 >"$work/payload/ort.tar.xz"
cp "$work"/wheels/isal-*.whl "$MODEL" "${MODEL%.onnx}.json" "$work/payload/"
grep -qsx '/.whl/' .git/info/exclude || { mkdir -p .git/info && echo /.whl/ >>.git/info/exclude; }
rm -rf .whl && mkdir -p "$work/parts"
tar -C "$work/payload" -cf - . | split -b 60M -d - "$work/parts/part."
i=0
for part in "$work"/parts/part.*; do
  mkdir -p ".whl/p$i" && mv "$part" ".whl/p$i/"
  i=$((i + 1))
done
ls -l .whl/*/
