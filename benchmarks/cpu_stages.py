"""Host CPU per image, stage by stage, as a GPU node's worker spends it (no queue, no model).

The model is a stand-in that answers at once with the real ISNet's matte of the photo
(tests/support/mattes.py): mostly 0 and 255 with a thin soft band, so the edge steps cost what they
cost on a photo. The photo is the same astronaut, as a JPEG. Each stage is what
image/matting.matte_bytes and worker/image_job.py do, in order (a check first: the same bytes as
matte_bytes), timed with the process's CPU clock (time.process_time: every thread's CPU, not wall
time), one thread each as the overlapped worker's pool processes run (one_thread_each), with the
workers' allocator settings (malloc.py: each image-sized buffer is a fresh mapping, so its page faults
are counted as a worker pays them). Importing this module has no side effects.

Three variants, alternating: the edge steps of today, as they were before edge-speed, and on the device
(CVUNET_EDGES_ON_DEVICE's default on a GPU: the stand-in device answers with the edge suffix's outputs,
computed once beforehand on the CPU provider; the host only scores the matte, applies the options and
encodes). The device variant leaves out onnxruntime's own host work for the suffix's run (launches and
copies: on an H100 the suffix and the host's rest took 21 ms of host CPU at 1600x1200, make bench-edges).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

STAGES = ("decode", "preprocess", "postprocess", "encode", "write")


class StandIn:
    """A model session whose device answers at once with the real model's matte of the photo."""

    def __init__(self, uint8: bool = True):
        from cvunet_matting.model.manifest import builtin
        from tests.support.mattes import model_matte

        self.manifest, self.version, self.uint8 = builtin("isnet-fp16"), "stand-in", uint8
        self.answer = model_matte()[None, None]

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        from cvunet_matting.model.session import model_input

        return model_input(rgb, self.manifest, self.uint8)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        return self.answer

    def postprocess(self, raw: np.ndarray, height: int, width: int) -> np.ndarray:
        from cvunet_matting.model.session import alpha_from_output

        return alpha_from_output(raw, self.manifest, height, width)

    def predict_alpha(self, rgb: np.ndarray, timings: dict[str, float] | None = None) -> np.ndarray:
        from cvunet_matting.model.session import predict_alpha

        return predict_alpha(self, rgb, timings)


class DeviceStandIn(StandIn):
    """The stand-in with the edge steps on its device: answers with the suffix's outputs for the photo
    (computed once here by the real suffix on the CPU provider, from the stand-in's matte)."""

    edges_on_device = True

    def __init__(self, rgb: np.ndarray):
        from cvunet_matting.image.device_finish import edge_math
        from cvunet_matting.model.suffix_session import EdgeSuffix

        super().__init__()
        side = (self.manifest.size[0], self.manifest.size[1])
        self.done = EdgeSuffix(side, edge_math(), ["CPUExecutionProvider"]).run(self.answer, rgb, True, True)

    def predict_edges(self, rgb: np.ndarray, refine: bool, solidify: bool, timings=None):
        assert refine and solidify, "the stand-in has the default options' answer only"
        self.infer(self.preprocess(rgb))
        return self.done


def on_device(session: StandIn, tensor: np.ndarray, rgb, input_alpha, options):
    """matte_bytes's steps after the model when the device ran the edge steps (image/matting.py)."""
    from cvunet_matting.image.confidence import confidence
    from cvunet_matting.image.device_finish import finish_from_device

    assert isinstance(session, DeviceStandIn)
    session.infer(tensor)
    confidence(session.done.raw, None)
    return (session.done.raw, *finish_from_device(rgb, session.done, input_alpha, options))


def on_host(edges: Callable) -> Callable:
    """The steps after the model when the host does the edge steps (`edges`)."""

    def steps(session: StandIn, tensor: np.ndarray, rgb, input_alpha, options):
        raw_alpha = session.postprocess(session.infer(tensor), rgb.shape[0], rgb.shape[1])
        return (raw_alpha, *edges(raw_alpha, rgb, input_alpha, options))

    return steps


def current_edges(raw_alpha, rgb, input_alpha, options):
    """The score and the edge steps as matte_bytes runs them (the distance maps shared)."""
    from cvunet_matting.image.confidence import confidence
    from cvunet_matting.image.edges import finish
    from cvunet_matting.image.solid import distances

    maps = distances(raw_alpha)
    confidence(raw_alpha, maps)
    return finish(rgb, raw_alpha, input_alpha, options, maps)


def edges_before(raw_alpha, rgb, input_alpha, options):
    """The same before edge-speed (tests/support/edges_before): the same-run baseline."""
    from tests.support import edges_before as before

    before.confidence(raw_alpha)
    return before.finish(rgb, raw_alpha, input_alpha, options)


def one_image(data: bytes, session: StandIn, folder: Path, after_model: Callable) -> tuple[dict, bytes]:
    """matte_bytes and image_job's write, stage by stage: (CPU seconds per stage, the result)."""
    from cvunet_matting.config import get_settings
    from cvunet_matting.image.encoding import OutputOptions, encode
    from cvunet_matting.image.imaging import decode
    from cvunet_matting.image.input_alpha import read_alpha
    from cvunet_matting.image.rendering import raw_matte_png
    from cvunet_matting.storage.files import raw_matte_path, write_atomic

    settings, options, spent, clock = get_settings(), OutputOptions(), {}, time.process_time
    start = clock()
    rgb = decode(data, settings.max_pixels)
    input_alpha = read_alpha(data, rgb.shape[:2])
    spent["decode"] = (now := clock()) - start
    tensor = session.preprocess(rgb)
    spent["preprocess"] = (start := clock()) - now
    raw_alpha, rgb, alpha = after_model(session, tensor, rgb, input_alpha, options)
    spent["postprocess"] = (now := clock()) - start
    out = encode(rgb, alpha, options, 1)
    raw = raw_matte_png(raw_alpha, 1)
    spent["encode"] = (start := clock()) - now
    target = folder / "result.png"
    write_atomic(raw_matte_path(target), raw)
    write_atomic(target, out)
    spent["write"] = clock() - start
    return spent, out


def measure(width: int, height: int, repeat: int) -> dict[str, tuple[dict[str, float], int]]:
    """Median CPU ms per stage over `repeat` runs of each variant (alternating, after a warm-up), and
    the result's bytes: the edge steps of today, before edge-speed, and on the device."""
    import cv2

    from cvunet_matting.config import get_settings
    from cvunet_matting.image.encoding import OutputOptions
    from cvunet_matting.image.imaging import decode
    from cvunet_matting.image.matting import matte_bytes
    from cvunet_matting.malloc import tune_for_large_buffers
    from tests.support.mattes import photo_jpeg

    cv2.setNumThreads(1)  # as device_client.one_thread_each sets it in a pool process
    tune_for_large_buffers()  # the workers' allocator: each image-sized buffer is mapped afresh
    data, session = photo_jpeg(width, height), StandIn()
    device = DeviceStandIn(decode(data, get_settings().max_pixels))
    variants = {
        "today": (session, on_host(current_edges)),
        "before edge-speed": (session, on_host(edges_before)),
        "edges on device": (device, on_device),
    }
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    sizes = {}
    settings = replace(get_settings(), encode_threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("today", "edges on device"):
            stand_in, steps = variants[name]
            out = one_image(data, stand_in, Path(tmp), steps)[1]
            assert out == matte_bytes(data, OutputOptions(), stand_in, settings).data, f"{name}: not matte_bytes'"
        for name, (stand_in, steps) in variants.items():
            sizes[name] = len(one_image(data, stand_in, Path(tmp), steps)[1])
        for _ in range(repeat):  # alternating, so that the host's drift falls on all alike
            for name, (stand_in, steps) in variants.items():
                runs[name].append(one_image(data, stand_in, Path(tmp), steps)[0])
    return {
        name: ({stage: statistics.median(r[stage] for r in runs[name]) * 1000 for stage in STAGES}, sizes[name])
        for name in variants
    }


def report(sizes: list[tuple[int, int]], repeat: int) -> dict[tuple[int, int], dict[str, float]]:
    """Print the stages' CPU per image at each size; returns today's medians (ms) by size."""
    from tests.support.mattes import describe, realistic_alpha

    print(f"host CPU per image, ms (process CPU time, one thread, medians of {repeat}), default options:")
    today = {}
    for width, height in sizes:
        print(f"  {width}x{height}, the stand-in model's matte: {describe(realistic_alpha(width, height))}")
        for name, (ms, size) in measure(width, height, repeat).items():
            stages = ", ".join(f"{stage} {ms[stage]:5.1f}" for stage in STAGES)
            print(f"    {name:>17}: {stages}; total {sum(ms.values()):6.1f} (result {size / 1024:.0f} KiB)")
            today.setdefault((width, height), ms)
    return today
