"""bench_peer's bare onnxruntime: the model file alone, nothing around it, as the inference rate ceiling.

Usage: python benchmarks/peer_bare.py MODEL THREADS
onnxruntime's own defaults (CPU arena on, threads spinning, every graph optimisation) with THREADS intra-op
threads, as a hand-written script would run it. Prints "ready" once loaded and warmed; then for each line
on stdin naming a folder of JPEGs it decodes and shrinks each the way our worker does (outside the clock),
times each session.run one after another, and prints one JSON line: {"elapsed": s, "runs": [s, ...]}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from cvunet_matting.model.manifest import Manifest, manifest_path
from cvunet_matting.model.session import model_input


def inputs(folder: Path, manifest: Manifest) -> list[np.ndarray]:
    tensors = []
    for path in sorted(folder.iterdir()):
        bgr = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
        tensors.append(model_input(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), manifest))
    return tensors


def main() -> None:
    model, threads = Path(sys.argv[1]), int(sys.argv[2])
    manifest = Manifest.from_dict(json.loads(manifest_path(model).read_text()))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    name, wanted = manifest.input_name, [manifest.output_name]  # the matte alone, as our worker asks
    session.run(wanted, {name: np.zeros((1, 3, *manifest.size), np.float32)})
    print("ready", flush=True)
    for line in sys.stdin:
        tensors = inputs(Path(line.strip()), manifest)
        runs = []
        started = time.perf_counter()
        for tensor in tensors:
            clock = time.perf_counter()
            session.run(wanted, {name: tensor})
            runs.append(time.perf_counter() - clock)
        print(json.dumps({"elapsed": time.perf_counter() - started, "runs": runs}), flush=True)


if __name__ == "__main__":
    main()
