"""The allocator settings for image-sized buffers apply on this (glibc) system."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Prepended to each script: the process's resident size in MB.
RSS_MB = """
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
"""


def run_fresh(script: str, *args: str) -> str:
    """What `script` prints, run in a fresh interpreter (allocator settings are per process)."""
    source = RSS_MB + textwrap.dedent(script)
    return subprocess.run([sys.executable, "-c", source, *args], capture_output=True, text=True, check=True).stdout


def test_large_buffers_go_back_to_the_system_after_tuning():
    # In a fresh process: with glibc's sliding threshold, a freed 30 MB block lifts the threshold,
    # later 20 MB buffers land on the heap between small live blocks, and their space is kept after
    # free; with the fixed threshold each has its own mapping and RSS drops back.
    script = """
        import sys, numpy as np
        from cvunet_matting.malloc import tune_for_large_buffers

        if sys.argv[1] == "tuned":
            assert tune_for_large_buffers()
        big = np.ones(30 << 20, np.uint8)
        del big
        base = rss_mb()
        buffers, pins = [], []
        for _ in range(5):
            buffers.append(np.ones(20 << 20, np.uint8))
            pins.append(bytearray(200_000))  # a small live block after each buffer
        del buffers
        print(rss_mb() - base)
        """

    grown = {mode: float(run_fresh(script, mode)) for mode in ("default", "tuned")}
    assert grown["tuned"] < 10  # MB kept after freeing 100 MB of buffers
    assert grown["default"] > 50  # the behaviour the tuning is for


def test_the_heap_keeps_its_top_for_the_next_image():
    # A 3 MB array (under the mmap threshold: on the heap) made and freed 20 times, as the edge steps'
    # working arrays are for every image. With the mmap threshold alone fixed, glibc's trim threshold
    # stays at 128 KiB: each free gives the pages back and each new array faults them in again.
    script = """
        import ctypes, resource, sys, numpy as np
        from cvunet_matting import malloc

        if sys.argv[1] == "tuned":
            assert malloc.tune_for_large_buffers()
        else:  # the settings before the trim threshold was set
            libc = ctypes.CDLL("libc.so.6")
            assert libc.mallopt(malloc.M_MMAP_THRESHOLD, malloc.MMAP_THRESHOLD_BYTES) == 1
        np.ones(3 << 20, np.uint8)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            np.ones(3 << 20, np.uint8)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        """

    assert int(run_fresh(script, "tuned")) < 200  # 20 x 768 pages if each array were faulted in afresh
    assert int(run_fresh(script, "mmap-only")) > 10_000


def test_the_heap_gives_back_a_burst_freed_at_load():
    # A model's graph edited at load: many blocks under the mmap threshold (its weights), freed once the
    # session holds its own copy, with small live blocks between them, so the heap's top cannot shrink.
    script = """
        import numpy as np
        from cvunet_matting import malloc

        assert malloc.tune_for_large_buffers()
        base = rss_mb()
        blocks, pins = [], []
        for _ in range(100):
            blocks.append(np.ones(1 << 20, np.uint8))
            pins.append(bytearray(1000))
        pins.append(bytearray(1000))
        del blocks
        kept = rss_mb() - base
        malloc.release_free_memory()
        print(kept, rss_mb() - base)
        """
    kept, after = map(float, run_fresh(script).split())
    assert kept > 80  # MB of 100 freed, still held: what the release is for
    assert after < 20
