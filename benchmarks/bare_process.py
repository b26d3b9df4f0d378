"""One bare-model process for bench_pipeline's parallel baseline (no queue, no database).

Usage: python benchmarks/bare_process.py IMAGE_DIR
Loads the model and warms it on the first image, prints "ready", waits for a line on stdin, then
mattes every image in IMAGE_DIR and prints "<count> <seconds>". Threads come from the environment
(CVUNET_INTRA_THREADS), exactly as `workers.plan` gives them to a CPU worker.
"""

from __future__ import annotations

import sys
from pathlib import Path

from baremodel import warmed_up  # beside this script, so on its path


def main() -> None:
    images = [p.read_bytes() for p in sorted(Path(sys.argv[1]).iterdir())]
    run = warmed_up(images[0])
    print("ready", flush=True)
    sys.stdin.readline()
    seconds, _ = run(images)
    print(len(images), seconds, flush=True)


if __name__ == "__main__":
    main()
