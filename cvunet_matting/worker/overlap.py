"""The overlapped worker's shape: how many images it holds at once and how it batches them.

From the settings (config.py): CVUNET_OVERLAP (default: on for a CUDA worker, off on the CPU, where
the model itself needs the cores), CVUNET_IN_FLIGHT (the pool's processes: images read, decoded,
preprocessed, waiting for the device, encoded and written at once), CVUNET_MAX_BATCH (images per
model run, fixed-size models only) and CVUNET_BATCH_WAIT_MS (how long the device waits for a batch
to fill when fewer images are ready).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cvunet_matting.config import Settings, load_settings


@dataclass(frozen=True)
class Overlap:
    enabled: bool
    in_flight: int
    max_batch: int
    batch_wait_s: float

    @property
    def concurrency(self) -> int:
        """The pool's size: one process per image held at once; one when not overlapped."""
        return self.in_flight if self.enabled else 1


def overlap_of(settings: Settings, cores: int | None = None) -> Overlap:
    enabled = settings.device == "cuda" if settings.overlap is None else settings.overlap
    cores = cores or len(os.sched_getaffinity(0))
    # Enough images for a full batch to wait at the device while the cores work on the next ones,
    # plus one in hand-over (fetched, mirrored, acked: on neither a core nor the device). Without
    # it a core idled at batch 1: 8.4 against 9.6 images/s at L = 50 ms (bench_worker, 3 runs each).
    in_flight = max(2, settings.in_flight or settings.max_batch + min(cores, 8) + 1)
    return Overlap(enabled, in_flight, settings.max_batch, settings.batch_wait_ms / 1000)


def load_overlap(env=None, cores: int | None = None) -> Overlap:
    """The overlap of the settings `env` (default: this process's environment) would give."""
    return overlap_of(load_settings(os.environ if env is None else env), cores)
