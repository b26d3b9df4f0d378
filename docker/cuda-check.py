#!/opt/venv/bin/python
"""Fail unless the configured model runs one inference in a real CUDA session.

`'CUDAExecutionProvider' in onnxruntime.get_available_providers()` is true with no CUDA library
at all: only creating a session shows whether onnxruntime falls back to the CPU. Run at build
time (CUDA_CHECK=1) and on a GPU host: `docker run --rm --gpus 1 IMAGE cuda-check`.

`cuda-check --libraries` is what a host without a GPU can check (CI does, on every build): the
CUDA provider's library is there and every library it links, and every cuDNN part cuDNN loads at
run time, resolves through the loader's path; only the driver (libcuda, which NVIDIA's container
toolkit mounts from the host) may be missing.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from cvunet_matting.config import load_settings
from cvunet_matting.errors import MattingError
from cvunet_matting.model.session import MattingSession, resolve_model

DRIVER = ("libcuda.so",)
# cuDNN 9 loads these by name (dlopen) when the first convolution runs, not at link time.
CUDNN_PARTS = ("graph", "ops", "cnn", "adv", "heuristic", "engines_precompiled", "engines_runtime_compiled")


def cuda_provider() -> Path:
    import onnxruntime

    return Path(onnxruntime.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"


def unresolved_links(library: Path) -> list[str]:
    listing = subprocess.run(["ldd", str(library)], capture_output=True, text=True, check=True).stdout
    missing = [line.split()[0] for line in listing.splitlines() if "not found" in line]
    return [name for name in missing if not name.startswith(DRIVER)]


def unknown_to_loader(sonames: list[str]) -> list[str]:
    known = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    return [name for name in sonames if f"{name} " not in known]


def check_libraries() -> int:
    provider = cuda_provider()
    if not provider.exists():
        print(f"cuda-check: FAILED: no {provider.name}: this is onnxruntime's CPU wheel", file=sys.stderr)
        return 1
    missing = unresolved_links(provider) + unknown_to_loader([f"libcudnn_{part}.so.9" for part in CUDNN_PARTS])
    if missing:
        print(f"cuda-check: FAILED: not found by the loader: {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"cuda-check: ok, {provider.name} and cuDNN's parts resolve; a GPU host adds only its driver")
    return 0


def check_session() -> int:
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
    sys.exit(check_libraries() if sys.argv[1:] == ["--libraries"] else check_session())
