"""`make bench`: model load time, per-stage median latency at three sizes, and peak RSS.

Prints figures; asserts nothing. Usage: python benchmarks/bench_model.py [--repeat N]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import cv2

from cvunet_matting.config import get_settings
from cvunet_matting.imaging import OutputOptions
from cvunet_matting.matting import matte_bytes
from cvunet_matting.model import get_session

SIZES = {"512x512": (512, 512), "1024x1024": (1024, 1024), "4000x3000": (3000, 4000)}
STAGES = ("decode", "preprocess", "inference", "postprocess", "encode")


def photo(height: int, width: int) -> bytes:
    from skimage import data

    rgb = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_CUBIC)
    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return buf.tobytes()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    settings = get_settings()
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
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_mb:.0f} MiB; medians of {args.repeat} runs; overhead = (all but inference) / inference")


if __name__ == "__main__":
    main()
