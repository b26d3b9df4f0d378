#!/opt/venv/bin/python
"""Fail unless the configured model runs one inference in a real CUDA session.

`'CUDAExecutionProvider' in onnxruntime.get_available_providers()` is true with no CUDA library
at all: only creating a session shows whether onnxruntime falls back to the CPU. Run at build
time (CUDA_CHECK=1) and on a GPU host: `docker run --rm --gpus 1 IMAGE cuda-check`.
"""

import os
import sys

import numpy as np

from cvunet_matting.config import load_settings
from cvunet_matting.errors import MattingError
from cvunet_matting.model import MattingSession, resolve_model


def main() -> int:
    settings = load_settings({**os.environ, "CVUNET_DEVICE": "cuda"})
    try:
        path, manifest = resolve_model(settings)
        session = MattingSession(path, manifest, settings)  # raises unless CUDA is the first provider
        alpha = session.predict_alpha(np.full((64, 64, 3), 128, np.uint8))
    except MattingError as exc:
        print(f"cuda-check: FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"cuda-check: ok, {session.providers[0]} ran {path.name} ({alpha.shape[1]}x{alpha.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
