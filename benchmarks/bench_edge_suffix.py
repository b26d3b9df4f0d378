"""`make bench-edges`: the edge steps on the model's device (the ONNX edge suffix) against the CPU path.

For scikit-image's astronaut at each size: the CPU path (the model's alpha, then edges.finish with the
default options, what a worker does today) and the suffix path (one run returning the finished matte
and colours, then device_finish.finish_from_device), timed in the same run, median of --repeat, the
model's run alone beside them; then how far the suffix's outputs are from the CPU path's.

The device is the configured one (CVUNET_DEVICE: `cpu` here; on a GPU machine `cuda`, where the gain
is the point: on the CPU the suffix only takes the same cores, slower than OpenCV). The figures are
printed with the provider that gave them. Asserts nothing.

Usage: python benchmarks/bench_edge_suffix.py [--sizes 1600x1200,4000x3000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import cv2
import numpy as np

from cvunet_matting.config import load_settings
from cvunet_matting.image.device_finish import edge_math, finish_from_device
from cvunet_matting.image.edges import finish
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.model.session import MattingSession, resolve_model


def sessions() -> tuple[MattingSession, MattingSession]:
    """(plain, with the suffix): the plain one takes uint8 pixels too, as the GPU worker's does."""
    settings = load_settings({**os.environ, "CVUNET_EDGES_ON_DEVICE": "off"})
    path, manifest = resolve_model(settings)
    plain = MattingSession(path, manifest, settings, uint8_io=True)
    forced = load_settings({**os.environ, "CVUNET_EDGES_ON_DEVICE": "on"})
    return plain, MattingSession(path, manifest, forced, edges=edge_math())


def timed(run, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        clock = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - clock)
    return statistics.median(times), result


def differences(name: str, ours: np.ndarray, theirs: np.ndarray) -> str:
    diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
    return (
        f"{name}: max {diff.max()}, within 2 levels {100 * np.mean(diff <= 2):.4f}%, "
        f"mean {diff.mean():.4f}, differing {100 * np.mean(diff > 0):.3f}%"
    )


def one_size(plain: MattingSession, suffixed: MattingSession, rgb: np.ndarray, repeat: int) -> None:
    options = OutputOptions()

    def cpu_path():
        return finish(rgb.copy(), plain.predict_alpha(rgb), None, options)

    def suffix_path():
        return finish_from_device(rgb.copy(), suffixed.predict_edges(rgb, True, True), None, options)

    cpu_path(), suffix_path()  # warm: first runs of a shape allocate (and on CUDA pick kernels)
    model_s, _ = timed(lambda: plain.predict_alpha(rgb), repeat)
    cpu_s, (cpu_rgb, cpu_alpha) = timed(cpu_path, repeat)
    suffix_s, (dev_rgb, dev_alpha) = timed(suffix_path, repeat)
    height, width = rgb.shape[:2]
    print(
        f"{width}x{height}: model alone {model_s * 1000:.0f} ms; model + CPU edges {cpu_s * 1000:.0f} ms "
        f"(edges {1000 * (cpu_s - model_s):.0f}); model + suffix {suffix_s * 1000:.0f} ms "
        f"(suffix {1000 * (suffix_s - model_s):.0f}); suffix path / CPU path {suffix_s / cpu_s:.2f}"
    )
    print("  " + differences("alpha", dev_alpha, cpu_alpha))
    visible = (cpu_alpha > 0) | (dev_alpha > 0)
    print("  " + differences("colour where visible", dev_rgb[visible], cpu_rgb[visible]))


def main() -> None:
    from skimage import data

    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1600x1200,4000x3000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    plain, suffixed = sessions()
    print(f"providers: {suffixed.providers}; cv2 threads {cv2.getNumThreads()}; repeat {args.repeat}")
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        one_size(
            plain, suffixed, cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_CUBIC), args.repeat
        )


if __name__ == "__main__":
    main()
