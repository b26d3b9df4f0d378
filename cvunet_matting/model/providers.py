"""Which onnxruntime execution providers to ask for, from what is installed and configured."""

from __future__ import annotations

from pathlib import Path

from cvunet_matting.errors import DeviceError

CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
CPU = "CPUExecutionProvider"


def cuda_options(device_id: int, mem_limit_mb: int) -> dict:
    """CUDA options that keep GPU memory bounded and start-up cheap."""
    options = {
        "device_id": device_id,
        # Grow the arena by what is asked, not by powers of two: bounded memory on varied image sizes.
        "arena_extend_strategy": "kSameAsRequested",
        # Exhaustive cuDNN search costs seconds per new shape; the heuristic is close enough.
        "cudnn_conv_algo_search": "HEURISTIC",
    }
    if mem_limit_mb > 0:
        options["gpu_mem_limit"] = mem_limit_mb * 1024 * 1024
    return options


def tensorrt_options(device_id: int, engine_cache: Path | None) -> dict:
    """TensorRT with its engines (and timing cache) kept on the shared volume: building an engine
    takes minutes, so only the first worker to load a model pays it; the others load the file.

    CUDA graphs (`trt_cuda_graph_enable`) stay off: they need one fixed input shape, and a micro-
    batching worker runs batches of varying size. Untested here (no GPU on the development host).
    """
    options: dict[str, object] = {"device_id": device_id, "trt_engine_cache_enable": True}
    if engine_cache is not None:
        engine_cache.mkdir(parents=True, exist_ok=True)
        options |= {
            "trt_engine_cache_path": str(engine_cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(engine_cache),
        }
    return options


def choose_providers(
    available: list[str],
    device: str,
    tensorrt: bool,
    mem_limit_mb: int = 0,
    device_id: int = 0,
    engine_cache: Path | None = None,
) -> list:
    """Providers in priority order: TensorRT (if enabled), CUDA, then CPU.

    device "cpu" forces the CPU, "cuda" requires CUDA (a loud error when absent), "auto" uses it if present.
    """
    if device not in {"auto", "cpu", "cuda"}:
        raise DeviceError(f"CVUNET_DEVICE must be auto, cpu or cuda, not {device!r}")
    has_cuda = CUDA in available
    if device == "cuda" and not has_cuda:
        raise DeviceError(
            "CUDA was required (CVUNET_DEVICE=cuda) but onnxruntime offers only "
            f"{', '.join(available)}: install onnxruntime-gpu (`pip install .[gpu]`) and check the driver"
        )
    chosen: list = []
    if device != "cpu" and has_cuda:
        if tensorrt and TENSORRT in available:
            chosen.append((TENSORRT, tensorrt_options(device_id, engine_cache)))
        chosen.append((CUDA, cuda_options(device_id, mem_limit_mb)))
    chosen.append(CPU)
    return chosen


def provider_names(providers: list) -> list[str]:
    return [p[0] if isinstance(p, tuple) else p for p in providers]
