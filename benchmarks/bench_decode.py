"""Would decoding a JPEG at reduced size for the model's input pay? Prints (never asserts).

Today a worker decodes the photo once at full size (the result keeps the original pixels) and
shrinks it to the model's 1024x1024. A reduced decode (libjpeg's DCT scaling, OpenCV's
IMREAD_REDUCED_COLOR_2/4/8) is cheap, but the full decode is still needed for the composite, so the
reduced one only pays if it costs less than the shrink it replaces. Medians of --repeat runs, one
thread (as each pool process of the overlapped worker runs).
Usage: python benchmarks/bench_decode.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np
from skimage import data

from cvunet_matting.resize import shrink

SIZES = ((1600, 1200), (4000, 3000))
REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def photo_jpeg(width: int, height: int) -> bytes:
    base = cv2.resize(data.astronaut()[:, :, ::-1], (width, height), interpolation=cv2.INTER_CUBIC)
    noise = np.random.default_rng(0).integers(0, 12, base.shape, dtype=np.uint8)  # camera-like detail
    return cv2.imencode(".jpg", cv2.add(base, noise), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    repeat = parser.parse_args().repeat
    cv2.setNumThreads(1)
    for width, height in SIZES:
        jpeg = photo_jpeg(width, height)
        buf = np.frombuffer(jpeg, np.uint8)
        full = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        decode = median_ms(lambda b=buf: cv2.imdecode(b, cv2.IMREAD_COLOR), repeat)
        resize = median_ms(lambda f=full: shrink(f, 1024, 1024), repeat)
        print(f"{width}x{height} JPEG: full decode {decode:.1f} ms, shrink to 1024x1024 {resize:.1f} ms (today)")
        for factor, flag in REDUCED.items():
            if min(width, height) // factor < 1024 // 2:
                continue  # below half the model's side: too little detail left for the matte
            reduced = cv2.imdecode(buf, flag)
            cost = median_ms(lambda b=buf, f=flag: cv2.imdecode(b, f), repeat)
            rest = median_ms(lambda r=reduced: cv2.resize(r, (1024, 1024), interpolation=cv2.INTER_AREA), repeat)
            verdict = "pays" if cost + rest < resize else "does not pay"
            print(
                f"  + reduced decode 1/{factor}: {cost:.1f} ms + resize {rest:.1f} ms = {cost + rest:.1f} ms"
                f" instead of the {resize:.1f} ms shrink: {verdict}"
            )


if __name__ == "__main__":
    main()
