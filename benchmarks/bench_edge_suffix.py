"""`make bench-edges`: the edge steps on the model's device (the ONNX edge suffix) against the CPU path.

For scikit-image's astronaut at each size, from the real ISNet's uint8 answer (1024x1024), timed in one
run, medians of --repeat:
- the CPU path: the upscale (alpha_from_output) and edges.finish with the default options, what a
  worker does after the model today;
- the suffix alone (model/edge_suffix.suffix_only_model, on the configured device) and the host's rest
  (device_finish.finish_from_device), what a worker would do after the model with the suffix on;
- with --whole, also the model + CPU edges against the model with the suffix appended (one run).
Then how far the suffix's cut-out is from the CPU path's (alpha, colours premultiplied).

The device is the configured one (CVUNET_DEVICE: `cpu` here; `cuda` on a GPU machine, where the gain
is the point: on the CPU the suffix takes the same cores as OpenCV would, and is slower). The figures
are printed with the provider that gave them. Asserts nothing.

Usage: python benchmarks/bench_edge_suffix.py [--sizes 1600x1200,4000x3000] [--repeat 3] [--whole]
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
from cvunet_matting.model.session import MattingSession, alpha_from_output, resolve_model
from cvunet_matting.model.suffix_session import EdgeSuffix


def sessions() -> tuple[MattingSession, MattingSession]:
    """(plain, with the suffix): the plain one takes uint8 pixels too, as the GPU worker's does."""
    settings = load_settings({**os.environ, "CVUNET_EDGES_ON_DEVICE": "off"})
    path, manifest = resolve_model(settings)
    plain = MattingSession(path, manifest, settings, uint8_io=True)
    forced = load_settings({**os.environ, "CVUNET_EDGES_ON_DEVICE": "on"})
    return plain, MattingSession(path, manifest, forced, edges=edge_math())


def timed(run, repeat: int) -> tuple[float, float, object]:
    """Medians of wall time and of this process's CPU time (all its threads: the host cores it took)."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        clock, cpu = time.perf_counter(), time.process_time()
        result = run()
        walls.append(time.perf_counter() - clock)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), result


def both(wall: float, cpu: float) -> str:
    return f"{wall * 1000:.0f} ms (host CPU {cpu * 1000:.0f} ms)"


def differences(name: str, ours: np.ndarray, theirs: np.ndarray) -> str:
    diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
    return (
        f"{name}: max {diff.max()}, within 2 levels {100 * np.mean(diff <= 2):.4f}%, "
        f"mean {diff.mean():.4f}, differing {100 * np.mean(diff > 0):.3f}%"
    )


def premultiplied(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return np.round(rgb.astype(np.float32) * alpha[..., None] / 255).astype(np.uint8)


def edges_alone(plain: MattingSession, rgb: np.ndarray, repeat: int) -> None:
    """The edge steps after the model: the CPU path against the suffix alone, from the same matte."""
    options = OutputOptions()
    matte = plain.infer(plain.preprocess(rgb))  # uint8 (1, 1, 1024, 1024): the session takes uint8
    size = plain.manifest.size or rgb.shape[:2]
    suffix = EdgeSuffix((size[0], size[1]), edge_math(), plain.providers)

    def cpu_edges():
        raw = alpha_from_output(matte, plain.manifest, *rgb.shape[:2])
        return finish(rgb.copy(), raw, None, options)

    def device_edges():
        done = suffix.run(matte, rgb, True, True)
        return finish_from_device(rgb.copy(), done, None, options)

    cpu_edges(), device_edges()  # warm: first runs of a shape allocate (and on CUDA pick kernels)
    cpu_s, cpu_cpu, (cpu_rgb, cpu_alpha) = timed(cpu_edges, repeat)
    suffix_s, suffix_cpu, (dev_rgb, dev_alpha) = timed(device_edges, repeat)
    height, width = rgb.shape[:2]
    print(
        f"{width}x{height} edge steps after the model: CPU path {both(cpu_s, cpu_cpu)}; suffix "
        f"({suffix.session.get_providers()[0]}) + host rest {both(suffix_s, suffix_cpu)}; ratio {suffix_s / cpu_s:.2f}"
    )
    print("  " + differences("alpha", dev_alpha, cpu_alpha))
    print(
        "  "
        + differences("colour, premultiplied", premultiplied(dev_rgb, dev_alpha), premultiplied(cpu_rgb, cpu_alpha))
    )


def whole(plain: MattingSession, suffixed: MattingSession, rgb: np.ndarray, repeat: int) -> None:
    """The model and the edge steps: model + CPU edges against the model with the suffix appended."""
    options = OutputOptions()

    def cpu_path():
        return finish(rgb.copy(), plain.predict_alpha(rgb), None, options)

    def suffix_path():
        return finish_from_device(rgb.copy(), suffixed.predict_edges(rgb, True, True), None, options)

    cpu_path(), suffix_path()
    cpu_s, cpu_cpu, _ = timed(cpu_path, repeat)
    suffix_s, suffix_cpu, _ = timed(suffix_path, repeat)
    height, width = rgb.shape[:2]
    print(
        f"{width}x{height} whole: model + CPU edges {both(cpu_s, cpu_cpu)}; model + suffix "
        f"{both(suffix_s, suffix_cpu)}; ratio {suffix_s / cpu_s:.2f}"
    )


def main() -> None:
    from skimage import data

    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1600x1200,4000x3000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--whole", action="store_true", help="also time the model with each path")
    args = parser.parse_args()
    plain, suffixed = sessions()
    print(f"providers: {suffixed.providers}; cv2 threads {cv2.getNumThreads()}; repeat {args.repeat}")
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        rgb = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_CUBIC)
        edges_alone(plain, rgb, args.repeat)
        if args.whole:
            whole(plain, suffixed, rgb, args.repeat)


if __name__ == "__main__":
    main()
