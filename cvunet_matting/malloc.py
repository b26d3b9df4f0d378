"""glibc allocator settings for processes that handle image-sized buffers.

glibc raises its mmap threshold each time a large block is freed, so later image buffers (decoded
pixels, model tensors, encoded PNGs; megabytes each, a different size every image) come from the
heap instead, where freed space is fragmented and never returned: a worker's RSS doubled over
2,000 images of mixed sizes. A fixed threshold keeps every buffer over 4 MiB in its own mapping,
given back on free; fewer malloc arenas bound what the inference threads hold on to.

Why 4 MiB and not less: the edge steps' working arrays (at most 512 pixels on a side, up to 4 float32
channels: 4 MiB) are made afresh for every image; in their own mappings each one's pages were faulted
in again every time, a fifth of the edge steps' CPU (make bench-pipeline, 1600x1200: 91 against 73 ms,
same run). Below 4 MiB they come from the heap and are reused; a mixed series (12 MP, 800x800, 3 MP,
2 MP, 640x480, 7 MP, four rounds) ended at the same RSS with either threshold (173 MB).

Why a trim threshold of 64 MiB: fixing the mmap threshold also fixes glibc's trim threshold, which
its sliding rule would have kept at twice the mmap threshold (up to 64 MiB), at its 128 KiB default.
Then each heap block under 4 MiB freed at the heap's top gave its pages back at once, and the next
image's arrays faulted them in again: 13,000 page faults for the edge steps of one 1600x1200 photo,
half their CPU (86 against 50 ms; 640x480: 57 against 25). With 64 MiB the heap's top is kept for
the next image: a mixed series (12 MP, 800x800, 3 MP, 2 MP, 640x480, 7 MP, four rounds; decode,
edge steps, PNG encode) spent 212 instead of 285 ms of CPU per image, at the same peak RSS (332 against
330 MB); at rest a process may hold up to 64 MiB more.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = (4 << 20) + (256 << 10)  # a 4 MiB array and its header stay on the heap
TRIM_THRESHOLD_BYTES = 64 << 20  # glibc's own ceiling for its sliding trim threshold
ARENAS = 2


def tune_for_large_buffers() -> bool:
    """Apply the settings to this process; False where the C library is not glibc."""
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    ok = (
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
        and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
        and mallopt(M_ARENA_MAX, ARENAS) == 1
    )
    if not ok:
        log.warning("mallopt refused the allocator settings; memory may grow with mixed image sizes")
    return ok


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the kernel (glibc's malloc_trim), after a one-off burst of
    allocations such as a model's graph edited at load: ~120 MB of freed protobuf buffers otherwise
    stay in the worker's RSS (ISNet: 577 -> 454 MB once loaded). True when pages were given back."""
    malloc_trim = _libc_function("malloc_trim")
    return malloc_trim is not None and bool(malloc_trim(0))


def _libc_function(name: str):
    """One of glibc's functions, or None where the C library lacks it."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None
