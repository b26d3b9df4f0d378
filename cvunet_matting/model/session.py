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

from cvunet_matting.config import Settings, get_settings
from cvunet_matting.errors import DeviceError, ModelError
from cvunet_matting.malloc import release_free_memory
from cvunet_matting.resize import shrink_for_model

from .edge_suffix import ALPHA, FLAGS, FOREGROUND, PHOTO, RAW, EdgeMath, edges_wanted, plan
from .graph_edit import edited_model
from .manifest import BUILTIN, Manifest, manifest_path, sha256_file
from .protocols import EdgeOutputs, ModelStages
from .providers import CPU, CUDA, TENSORRT, choose_providers, provider_names

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


def model_input(rgb: np.ndarray, manifest: Manifest, uint8: bool = False) -> np.ndarray:
    """What the model is fed: the manifest's colour order and size, then either normalised float
    (NCHW, batch of one) or, for a graph given a uint8 prefix, the pixels themselves (NHWC)."""
    image = rgb if manifest.color == "RGB" else rgb[:, :, ::-1]
    if manifest.layout == "NCHW" and manifest.size:  # an NCHW manifest has one (Manifest checks it)
        height, width = manifest.size
        image = shrink_for_model(image, width, height)
    if uint8:
        return np.ascontiguousarray(image[None] if manifest.layout == "NCHW" else image)
    mean, std = np.asarray(manifest.mean, np.float32), np.asarray(manifest.std, np.float32)
    if manifest.layout != "NCHW":
        return (image.astype(np.float32) - mean) / std
    # A plane at a time, straight into the NCHW tensor: the same float32 arithmetic as on the whole
    # image, without three image-sized temporaries and a transposed copy (1024 x 1024: 30 -> 5 ms of CPU).
    tensor = np.empty((1, image.shape[2], *image.shape[:2]), np.float32)
    for channel, plane in enumerate(tensor[0]):
        np.subtract(image[..., channel], mean[channel], out=plane, dtype=np.float32)
        np.divide(plane, std[channel], out=plane)
    return tensor


def alpha_from_output(raw: np.ndarray, manifest: Manifest, height: int, width: int) -> np.ndarray:
    """Alpha as uint8 at the original size; the model's own resolution is resized up. A uint8 answer
    (the graph's uint8 suffix) is already scaled."""
    alpha = raw.reshape(raw.shape[-2:]) if manifest.output_kind == "alpha" else raw.reshape(raw.shape[-3:])[..., 3]
    if alpha.dtype != np.uint8:
        scale = np.float32(255.0 / manifest.output_scale)
        alpha = np.clip(alpha.astype(np.float32) * scale + 0.5, 0.0, 255.0).astype(np.uint8)
    if alpha.shape != (height, width):
        # Resized as uint8 at the end: a float matte of 12 MP would cost 10x more here.
        alpha = cv2.resize(alpha, (width, height), interpolation=cv2.INTER_LINEAR)
    return alpha


def cpu_memory_plan(keep_arena: bool, provider: str) -> tuple[bool, bool]:
    """(onnxruntime's CPU arena, its memory-pattern block) for a session whose first provider is `provider`.

    On the CPU provider the arena pays: without it every run's activations (~0.9 GB with ISNet at
    1024x1024) are fresh mappings whose pages the kernel faults in and zeroes again, and inference took
    1.17-1.18x as long as with it (benchmarks/bench_memory.py --speed, interleaved). The memory-pattern
    block is what made the arena hold ~2.1 GB: one block sized for the largest run, kept on top of the
    arena's own chunks; without it the arena reuses its chunks run after run at ~1.3 GB, as fast
    (0.97-0.98x onnxruntime's defaults); ~1.0 GB since the graph runs in float32 (graph_edit.py).
    CVUNET_CPU_ARENA=0 gives the lean worker: ~0.6 GB between images, the block planned but freed
    after each run. A GPU session's host side is small: it keeps the lean settings, as measured when
    the GPU worker was tuned.
    """
    if provider == CPU and keep_arena:
        return True, False
    return False, True


def computes_in_float32(wanted: bool, provider: str) -> bool:
    """Whether a session whose first provider is `provider` runs an fp16 graph in float32. Only the CPU
    provider: it has no fp16 convolutions here and would convert activations around every layer
    (graph_edit.py); CUDA and TensorRT run fp16 natively, and faster than float32."""
    return wanted and provider == CPU


class MattingSession:
    """Owns the onnxruntime session and the model's pre- and post-processing.

    `uint8_io` and `dynamic_batch` edit the graph at load (graph_edit): the device worker's session
    takes uint8 pixels and runs several images of a fixed-size model as one batch. `edges`: the edge
    steps' numbers, for the edge suffix (edge_suffix.py) where CVUNET_EDGES_ON_DEVICE wants it on the
    providers chosen; then predict_edges returns the finished matte and colours.
    """

    def __init__(
        self,
        path: Path,
        manifest: Manifest | None,
        settings: Settings,
        *,
        uint8_io: bool = False,
        dynamic_batch: bool = False,
        edges: EdgeMath | None = None,
    ):
        import onnxruntime as ort  # imported here: CUDA libraries load only when a session is wanted

        started = time.perf_counter()
        providers = choose_providers(
            ort.get_available_providers(),
            settings.device,
            settings.tensorrt,
            settings.gpu_mem_limit_mb,
            engine_cache=engine_cache_dir(settings),
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.intra_threads
        options.inter_op_num_threads = settings.inter_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads would hold a core for a while after each run, just when the worker's
        # queue and mirror work (and its neighbours') needs it; inference itself was no faster.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.intra_spin else "0")
        first = provider_names(providers)[0]
        options.enable_cpu_mem_arena, options.enable_mem_pattern = cpu_memory_plan(settings.cpu_arena, first)
        if not edges_wanted(settings.edges_on_device, first):
            edges = None
        self.edges = edges
        uint8_io = uint8_io or edges is not None  # the suffix follows the uint8 alpha
        self.uint8_io = uint8_io
        # Always edited: unread outputs are dropped, and on the CPU an fp16 graph runs in float32.
        float32 = computes_in_float32(settings.cpu_float32, first)
        edited = edited_model(path, manifest, dynamic_batch, uint8_io, edges, float32=float32)
        if edited.manifest.output_kind != "alpha":
            self.edges = None  # an RGBA model: no uint8 alpha to follow, the CPU finishes it
        manifest, self.batched = edited.manifest, edited.batched
        self.input_name, self.output_name = edited.input_name, edited.output_name
        self.session = ort.InferenceSession(edited.model, sess_options=options, providers=providers)
        del edited
        release_free_memory()  # the edited graph's buffers, freed just now
        self.provider_config, self.options = providers, options  # for a session beside it (suffix_session.py)
        self.providers = self.session.get_providers()
        if settings.device == "cuda" and self.providers[0] not in {CUDA, TENSORRT}:
            raise DeviceError(f"CUDA was required but the session runs on {self.providers[0]}")
        if not manifest.version:
            manifest = replace(manifest, version=sha256_file(path))
        self.manifest = manifest
        self.path = path
        self.load_seconds = time.perf_counter() - started
        log.info(
            "model %s (%s) loaded in %.2fs on %s (asked %s)%s",
            manifest.name,
            manifest.version[:12],
            self.load_seconds,
            self.providers,
            provider_names(providers),
            ", with the edge steps on the device (edge suffix)" if self.edges else "",
        )

    @property
    def version(self) -> str:
        return self.manifest.version

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        return model_input(rgb, self.manifest, self.uint8_io)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: tensor})[0]

    def infer_batch(self, tensors: list[np.ndarray]) -> list[np.ndarray]:
        """Several model inputs in one run where the graph takes a batch, else one run each."""
        if len(tensors) == 1 or not self.batched:
            return [self.infer(t) for t in tensors]
        raw = self.infer(np.concatenate(tensors))
        return [raw[i : i + 1] for i in range(len(tensors))]

    def postprocess(self, raw: np.ndarray, height: int, width: int) -> np.ndarray:
        return alpha_from_output(raw, self.manifest, height, width)

    def predict_alpha(self, rgb: np.ndarray, timings: dict[str, float] | None = None) -> np.ndarray:
        if self.edges is not None:  # the graph wants the suffix's inputs: its raw matte is this alpha
            return self.predict_edges(rgb, False, False, timings).raw
        return predict_alpha(self, rgb, timings)

    @property
    def edges_on_device(self) -> bool:
        return self.edges is not None

    def predict_edges(
        self, rgb: np.ndarray, refine: bool, solidify: bool, timings: dict[str, float] | None = None
    ) -> EdgeOutputs:
        """The model and the edge suffix in one run: the raw matte, the finished matte and the
        foreground colours, all at the photo's size (requires `edges_on_device`)."""
        assert self.edges is not None, "the session was loaded without the edge suffix"
        timings = {} if timings is None else timings
        clock = time.perf_counter()
        size = self.manifest.size or rgb.shape[:2]
        feeds = plan(rgb.shape[:2], (size[0], size[1]), self.edges)
        feeds |= {self.input_name: self.preprocess(rgb), PHOTO: np.ascontiguousarray(rgb)}
        feeds[FLAGS] = np.array([refine, solidify])
        timings["preprocess"] = (now := time.perf_counter()) - clock
        raw, alpha, foreground = self.session.run([RAW, ALPHA, FOREGROUND], feeds)
        timings["inference"] = time.perf_counter() - now
        return EdgeOutputs(raw, alpha, foreground)


def predict_alpha(session: ModelStages, rgb: np.ndarray, timings: dict[str, float] | None = None) -> np.ndarray:
    """HxWx3 uint8 RGB -> HxW uint8 alpha through `session` (its preprocess, infer, postprocess);
    fills `timings` (seconds) when given."""
    timings = {} if timings is None else timings
    clock = time.perf_counter()
    tensor = session.preprocess(rgb)
    timings["preprocess"] = (now := time.perf_counter()) - clock
    raw = session.infer(tensor)
    timings["inference"] = (clock := time.perf_counter()) - now
    alpha = session.postprocess(raw, rgb.shape[0], rgb.shape[1])
    timings["postprocess"] = time.perf_counter() - clock
    return alpha


def engine_cache_dir(settings: Settings) -> Path:
    """TensorRT engines, on the shared volume: the first worker to load a model builds them, the
    others (and this one after a restart) load them."""
    return settings.data_dir / "trt-engines"


_session: MattingSession | None = None
_session_lock = threading.Lock()


def get_session(settings: Settings | None = None, edges: EdgeMath | None = None) -> MattingSession:
    """The process's one session, created on first use (after fork in a worker, never at import);
    `edges`: the edge steps' numbers, for the edge suffix where the settings want it."""
    global _session
    with _session_lock:  # the warm-up thread and the first task may ask at once
        if _session is None:
            settings = settings or get_settings()
            path, manifest = resolve_model(settings)
            _session = MattingSession(path, manifest, settings, edges=edges)
        return _session
