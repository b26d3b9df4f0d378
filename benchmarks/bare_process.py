"""One bare-model process for bench_pipeline's parallel baseline (no queue, no database).

Usage: python benchmarks/bare_process.py IMAGE_DIR
Loads the model and warms it on the first image, prints "ready", waits for a line on stdin, then
mattes every image in IMAGE_DIR and prints "<count> <seconds>". Threads come from the environment
(CVUNET_INTRA_THREADS), exactly as `workers.plan` gives them to a CPU worker.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main() -> None:
    from cvunet_matting.config import get_settings
    from cvunet_matting.imaging import OutputOptions
    from cvunet_matting.matting import matte_bytes
    from cvunet_matting.model import get_session

    images = [p.read_bytes() for p in sorted(Path(sys.argv[1]).iterdir())]
    settings = get_settings()
    session = get_session(settings)
    matte_bytes(images[0], OutputOptions(), session, settings.max_pixels)
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    for data in images:
        matte_bytes(data, OutputOptions(), session, settings.max_pixels)
    print(len(images), time.perf_counter() - started, flush=True)


if __name__ == "__main__":
    main()
