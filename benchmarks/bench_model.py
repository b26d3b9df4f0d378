"""`make bench`: model load time, per-stage median latency at three sizes, and peak RSS.

Prints figures; asserts nothing. Usage: python benchmarks/bench_model.py [--repeat N]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import cv2
import numpy as np

from cvunet_matting.config import get_settings
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.image.matting import MODEL_STAGES as STAGES
from cvunet_matting.image.matting import matte_bytes
from cvunet_matting.malloc import tune_for_large_buffers
from cvunet_matting.model.session import get_session

SIZES = {"512x512": (512, 512), "1024x1024": (1024, 1024), "4000x3000": (3000, 4000)}


def photo(height: int, width: int) -> bytes:
    from skimage import data

    rgb = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_CUBIC)
    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return buf.tobytes()


def opencv_png_ms(jpeg: bytes, repeat: int) -> float:
    """What encoding cost before our strip-parallel writer: cv2.imencode at the same zlib level and filter."""
    bgra = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2BGRA)
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        cv2.imencode(".png", bgra, params)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    settings = get_settings()
    tune_for_large_buffers()  # the allocator as workers run it: every image buffer is a fresh mapping
    started = time.perf_counter()
    session = get_session(settings)
    print(f"model {session.manifest.name} on {session.providers[0]}: load {time.perf_counter() - started:.2f} s")
    print(f"{'size':>10} " + " ".join(f"{s:>11}" for s in STAGES) + f" {'total':>8} {'overhead':>9}")
    options = OutputOptions()
    for label, (height, width) in SIZES.items():
        data = photo(height, width)
        matte_bytes(data, options, session, settings)  # warm-up (allocations, first-run paths)
        runs = [matte_bytes(data, options, session, settings).timings for _ in range(args.repeat)]
        med = {s: statistics.median(r[s] for r in runs) for s in STAGES}
        overhead = sum(v for s, v in med.items() if s != "inference") / med["inference"]
        print(
            f"{label:>10} "
            + " ".join(f"{med[s] * 1000:>9.1f}ms" for s in STAGES)
            + f" {sum(med.values()):>7.2f}s {overhead:>8.1%}"
        )
    baseline = opencv_png_ms(data, args.repeat)
    print(f"baseline, same run: the 4000x3000 result through OpenCV's one-stream PNG writer: {baseline:.1f}ms")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_mb:.0f} MiB; medians of {args.repeat} runs; overhead = (all but inference) / inference")


if __name__ == "__main__":
    main()
