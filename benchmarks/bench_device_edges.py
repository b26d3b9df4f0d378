"""The overlapped worker's image work with the edge steps on the host's cores or in the device process.

No queue: a real device process (`python -m cvunet_matting.worker.device_server`, as the worker's main
process starts it) and a pool of processes that each run `matting.matte_bytes` on JPEG photos, as the
worker's pool processes do (decode, the model in the device process, the edge steps, PNG encode), one
OpenCV thread each. Two device processes in turn, the same photos:
- `off`: CVUNET_EDGES_ON_DEVICE=off, the edge steps in the pool processes (OpenCV), as before;
- `on`: the edge steps in the device process's edge suffix (model/suffix_session.py).
For each pool size: images/s, and the host CPU ms an image (the pool's processes + the device process:
what a GPU node's cores pay). On a GPU host the point; on the CPU provider the suffix takes the same
cores and is slower (make bench-edges). Photos: scikit-image's astronaut at --size, a real model's
matte when the model is real (ISNet by default). Asserts nothing.

Usage: python benchmarks/bench_device_edges.py [--size 1600x1200] [--images 48] [--pools 4,8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

from cvunet_matting.worker.device_protocol import AUTHKEY_ENV

_session = None  # each pool process's RemoteSession and settings
_settings = None


def clock_ticks(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_device(mode: str, folder: Path) -> tuple[subprocess.Popen, str, str]:
    address, authkey = str(folder / f"device-{mode}.sock"), os.urandom(16).hex()
    env = {**os.environ, "CVUNET_EDGES_ON_DEVICE": mode, AUTHKEY_ENV: authkey}
    command = [sys.executable, "-m", "cvunet_matting.worker.device_server", "--socket", address]
    proc = subprocess.Popen([*command, "--parent", str(os.getpid())], env=env)
    return proc, address, authkey


def pool_start(address: str, authkey: str) -> None:
    global _session, _settings
    from cvunet_matting.config import get_settings
    from cvunet_matting.worker.device_client import RemoteSession, one_thread_each

    _settings = one_thread_each(get_settings())  # as the worker's pool: one OpenCV and deflate thread each
    _session = RemoteSession(address, bytes.fromhex(authkey))


def one_image(data: bytes) -> tuple[dict[str, float], float, bool]:
    """One image's work as a worker's pool process does it: its stage timings and its CPU seconds."""
    from cvunet_matting.image.encoding import OutputOptions
    from cvunet_matting.image.matting import matte_bytes

    cpu = time.process_time()
    result = matte_bytes(data, OutputOptions(), _session, _settings, keep_raw=True)
    return result.timings, time.process_time() - cpu, bool(_session.edges_on_device)


def measure(address: str, authkey: str, device_pid: int, photos: list[bytes], pool_size: int) -> dict:
    # spawned: forked after this process ran OpenCV's thread pool, a child hangs in cv2.setNumThreads
    context = multiprocessing.get_context("spawn")
    with context.Pool(pool_size, initializer=pool_start, initargs=(address, authkey)) as pool:
        pool.map(one_image, photos[: 2 * pool_size], chunksize=1)  # warm: first runs of each shape
        device_before = clock_ticks(device_pid)
        clock = time.perf_counter()
        answers = pool.map(one_image, photos, chunksize=1)
        wall = time.perf_counter() - clock
        device_cpu = clock_ticks(device_pid) - device_before
    pool_cpu = sum(cpu for _, cpu, _ in answers)
    stages = {k: statistics.median(t[k] for t, _, _ in answers) * 1000 for k in answers[0][0]}
    return {
        "rate": len(photos) / wall,
        "host_ms": (pool_cpu + device_cpu) / len(photos) * 1000,
        "device_ms": device_cpu / len(photos) * 1000,
        "edges": answers[0][2],
        "stages": stages,
    }


def photos_of(size: str, count: int) -> list[bytes]:
    from skimage import data

    width, height = (int(v) for v in size.split("x"))
    rgb = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_CUBIC)
    jpeg = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()
    return [jpeg] * count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="1600x1200")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--pools", default="4,8")
    parser.add_argument("--rounds", type=int, default=2, help="off/on alternations (A B A B ...)")
    args = parser.parse_args()
    photos = photos_of(args.size, args.images)
    pools = [int(v) for v in args.pools.split(",")]
    print(f"{args.size}, {args.images} photos a run, pools {pools}; cores {os.cpu_count()}")
    results: dict[tuple[str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.rounds):
            for mode in ("off", "on"):
                proc, address, authkey = start_device(mode, Path(folder))
                try:
                    for size in pools:
                        got = measure(address, authkey, proc.pid, photos, size)
                        results.setdefault((mode, size), []).append(got)
                        stages = ", ".join(f"{k} {v:.1f}" for k, v in got["stages"].items())
                        print(
                            f"  edges {mode} (device says {got['edges']}), pool {size}: {got['rate']:.1f} img/s, "
                            f"host CPU {got['host_ms']:.1f} ms an image (device process {got['device_ms']:.1f}); "
                            f"stage medians ms: {stages}",
                            flush=True,
                        )
                finally:
                    proc.kill()
                    proc.wait()
    for size in pools:
        off, on = results[("off", size)], results[("on", size)]
        rate = [statistics.median(r["rate"] for r in runs) for runs in (off, on)]
        host = [statistics.median(r["host_ms"] for r in runs) for runs in (off, on)]
        print(
            f"pool {size}: edges off {rate[0]:.1f} img/s, {host[0]:.1f} host CPU ms an image; on {rate[1]:.1f} img/s, "
            f"{host[1]:.1f} ms; on/off rate {rate[1] / rate[0]:.2f}, host CPU {host[1] / host[0]:.2f}"
        )


if __name__ == "__main__":
    main()
