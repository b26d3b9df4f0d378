"""`make bench-canvas`: what the output controls (crop, size, scale and position, a background image,
the blurred photo) add to a cut-out, on the re-render path (the same drawing step as the worker's).

The photo is scikit-image's astronaut upscaled to 12 MP (4000x3000) and 1 MP (1224x816), stored as a
JPEG; its raw matte is the real ISNet's (`make model`). Each option set is rendered as
services/rerendering.py renders it (one thread: decode, edge steps, canvas, backdrop, encode); it
prints the p50 wall time, its ratio to the defaults measured in the same run, and the size of the
result, and where the canvas step itself goes (the subject's box, a crop, a shrink, a blur).
Prints; asserts nothing.

Usage: python benchmarks/bench_canvas.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics

import cv2
import numpy as np
from skimage import data

from cvunet_matting.config import get_settings
from cvunet_matting.image import layout
from cvunet_matting.image.backdrop import Blurred, cover
from cvunet_matting.image.edges import finish
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.image.imaging import decode
from cvunet_matting.image.matting import matte_bytes
from cvunet_matting.image.rendering import read_raw_matte, render
from cvunet_matting.model.session import get_session
from cvunet_matting.services.rerendering import THREADS

SIZES = {"12 MP": (4000, 3000), "1 MP": (1224, 816)}


def jpeg_of(rgb: np.ndarray, width: int, height: int) -> bytes:
    rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_CUBIC)
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def option_sets(background: bytes) -> dict[str, OutputOptions]:
    return {
        "defaults (PNG, transparent)": OutputOptions(),
        "crop": OutputOptions.parse(crop="true"),
        "crop, margin 10%": OutputOptions.parse(crop="true", crop_margin="10%"),
        "size preview": OutputOptions.parse(size="preview"),
        "crop + size 1024px": OutputOptions.parse(crop="true", size="1024"),
        "scale 60%, position center": OutputOptions.parse(scale="60%"),
        "bg_image (12 MP JPEG), jpg": OutputOptions.parse("jpg", background=background),
        "bg_blur 20, jpg": OutputOptions.parse("jpg", bg_blur="20"),
        "preview, crop, bg_blur 20, jpg": OutputOptions.parse("jpg", bg_blur="20", crop="true", size="preview"),
    }


def wall_ms(step, repeat: int) -> list[float]:
    import time

    step()
    out = []
    for _ in range(repeat):
        clock = time.perf_counter()
        step()
        out.append((time.perf_counter() - clock) * 1000)
    return out


def renders(jpeg: bytes, matte: bytes, background: bytes, repeat: int, max_pixels: int) -> None:
    base = None
    for name, options in option_sets(background).items():

        def once(options: OutputOptions = options):
            return render(jpeg, matte, options, max_pixels, THREADS, options.background)

        result = once()
        p50 = statistics.median(wall_ms(once, repeat))
        base = base or p50
        print(
            f"  {name:>32}: p50 {p50:7.1f} ms  x{p50 / base:4.2f} of the defaults"
            f"  -> {result.width}x{result.height}, {len(result.data) / 1024:.0f} KiB"
        )


def canvas_steps(jpeg: bytes, matte: bytes, background: bytes, repeat: int, max_pixels: int) -> None:
    rgb = decode(jpeg, max_pixels)
    height, width = rgb.shape[:2]
    _, alpha = finish(rgb.copy(), read_raw_matte(matte, rgb.shape), None, OutputOptions())
    the_plan = layout.plan(alpha, OutputOptions(crop=True))
    steps = {
        "subject box (components)": lambda: layout.subject_box(alpha),
        "crop window": lambda: layout.draw(rgb, alpha, the_plan),
        "shrink to preview": lambda: layout.shrink(rgb, alpha, "preview"),
        "blur 20 px (prepare)": lambda: Blurred(rgb, 20),
        "cover 12 MP background": lambda: cover(decode(background, max_pixels), width, height),
    }
    said = ", ".join(f"{n} {statistics.median(wall_ms(s, repeat)):.1f}" for n, s in steps.items())
    print(f"  canvas steps (ms, medians): {said}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    settings = get_settings()
    session = get_session(settings)
    background = jpeg_of(data.coffee(), 4000, 3000)
    print(f"model {session.version}; renders on {THREADS} thread; {args.repeat} runs each, medians")
    for size, (width, height) in SIZES.items():
        jpeg = jpeg_of(data.astronaut(), width, height)
        made = matte_bytes(jpeg, OutputOptions(), session, settings, keep_raw=True)
        assert made.raw_matte is not None
        print(f"\n{size} ({width}x{height}):")
        renders(jpeg, made.raw_matte, background, args.repeat, settings.max_pixels)
        canvas_steps(jpeg, made.raw_matte, background, args.repeat, settings.max_pixels)


if __name__ == "__main__":
    main()
