"""The ONNX model: one MattingSession per process turns RGB pixels into an alpha matte."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from .config import Settings, get_settings
from .errors import DeviceError, ModelError
from .manifest import BUILTIN, Manifest, guess_template, manifest_path, sha256_file
from .providers import CUDA, choose_providers, provider_names

log = logging.getLogger(__name__)


def resolve_model(settings: Settings) -> tuple[Path, Manifest | None]:
    """The .onnx to load and its manifest (None: guess it from the graph once loaded)."""
    if settings.model in BUILTIN:
        path = settings.model_dir / f"{settings.model}.onnx"
        if not path.exists():
            raise ModelError(
                f"model {settings.model} is not installed in {settings.model_dir}: "
                "run `cvunet-matting model fetch` (or `make model`)"
            )
    else:
        path = Path(settings.model).expanduser()
        if not path.exists():
            raise ModelError(f"CVUNET_MODEL={settings.model}: no such file")
    beside = manifest_path(path)
    if beside.exists():
        return path, Manifest.from_dict(json.loads(beside.read_text()))
    return path, None


def shrink(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-average resize to width x height, in two steps for a large image.

    OpenCV's area resize has a fast path for whole-number factors and a slow general one: halving a
    12 MP photo first (fast path) and then resizing the quarter-size image takes 11 ms instead of 26,
    for the same averaging within a grey level or two.
    """
    factor = min(image.shape[1] // width, image.shape[0] // height)
    if factor >= 2:
        # Whole blocks only (at most factor-1 edge rows and columns dropped), so blocks stay aligned.
        rows, cols = image.shape[0] - image.shape[0] % factor, image.shape[1] - image.shape[1] % factor
        image = cv2.resize(image[:rows, :cols], None, fx=1 / factor, fy=1 / factor, interpolation=cv2.INTER_AREA)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


class MattingSession:
    """Owns the onnxruntime session and the model's pre- and post-processing."""

    def __init__(self, path: Path, manifest: Manifest | None, settings: Settings):
        import onnxruntime as ort  # imported here: CUDA libraries load only when a session is wanted

        started = time.perf_counter()
        providers = choose_providers(
            ort.get_available_providers(), settings.device, settings.tensorrt, settings.gpu_mem_limit_mb
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.intra_threads
        options.inter_op_num_threads = settings.inter_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads would hold a core for a while after each run, just when the worker's
        # queue and mirror work (and its neighbours') needs it; inference itself was no faster.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.intra_spin else "0")
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        self.providers = self.session.get_providers()
        if settings.device == "cuda" and self.providers[0] not in {CUDA, "TensorrtExecutionProvider"}:
            raise DeviceError(f"CUDA was required but the session runs on {self.providers[0]}")
        if manifest is None:
            manifest = guess_template([i.name for i in self.session.get_inputs()])
        if not manifest.version:
            manifest = replace(manifest, version=sha256_file(path))
        self.manifest = manifest
        self.path = path
        self.load_seconds = time.perf_counter() - started
        log.info(
            "model %s (%s) loaded in %.2fs on %s (asked %s)",
            manifest.name,
            manifest.version[:12],
            self.load_seconds,
            self.providers,
            provider_names(providers),
        )

    @property
    def version(self) -> str:
        return self.manifest.version

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        m = self.manifest
        image = rgb if m.color == "RGB" else rgb[:, :, ::-1]
        if m.layout == "NCHW":
            height, width = m.size
            image = shrink(image, width, height)
        tensor = (image.astype(np.float32) - np.float32(m.mean)) / np.float32(m.std)
        if m.layout == "NCHW":
            tensor = np.ascontiguousarray(tensor.transpose(2, 0, 1)[None])
        return tensor

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        m = self.manifest
        return self.session.run([m.output_name], {m.input_name: tensor})[0]

    def postprocess(self, raw: np.ndarray, height: int, width: int) -> np.ndarray:
        """Alpha as uint8 at the original size; the model's own resolution is resized up."""
        m = self.manifest
        alpha = raw.reshape(raw.shape[-2:]) if m.output_kind == "alpha" else raw.reshape(raw.shape[-3:])[..., 3]
        alpha = np.clip(alpha.astype(np.float32) * (255.0 / m.output_scale) + 0.5, 0.0, 255.0).astype(np.uint8)
        if alpha.shape != (height, width):
            # Resized as uint8 at the end: a float matte of 12 MP would cost 10x more here.
            alpha = cv2.resize(alpha, (width, height), interpolation=cv2.INTER_LINEAR)
        return alpha

    def predict_alpha(self, rgb: np.ndarray, timings: dict | None = None) -> np.ndarray:
        """HxWx3 uint8 RGB -> HxW uint8 alpha; fills `timings` (seconds) when given."""
        timings = {} if timings is None else timings
        clock = time.perf_counter()
        tensor = self.preprocess(rgb)
        timings["preprocess"] = (now := time.perf_counter()) - clock
        raw = self.infer(tensor)
        timings["inference"] = (clock := time.perf_counter()) - now
        alpha = self.postprocess(raw, rgb.shape[0], rgb.shape[1])
        timings["postprocess"] = time.perf_counter() - clock
        return alpha


_session: MattingSession | None = None
_session_lock = threading.Lock()


def get_session(settings: Settings | None = None) -> MattingSession:
    """The process's one session, created on first use (after fork in a worker, never at import)."""
    global _session
    with _session_lock:  # the warm-up thread and the first task may ask at once
        if _session is None:
            settings = settings or get_settings()
            path, manifest = resolve_model(settings)
            _session = MattingSession(path, manifest, settings)
        return _session
