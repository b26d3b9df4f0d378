"""Settings of the overlapped worker: how many images it holds at once and how it batches them.

Read here rather than in config.py (whose owner may move them there): CVUNET_OVERLAP (default: on
for a CUDA worker, off on the CPU, where the model itself needs the cores), CVUNET_IN_FLIGHT (the
pool's processes: images read, decoded, preprocessed, waiting for the device, encoded and written
at once), CVUNET_MAX_BATCH (images per model run, fixed-size models only) and CVUNET_BATCH_WAIT_MS
(how long the device waits for a batch to fill when fewer images are ready).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_MAX_BATCH = 4
DEFAULT_BATCH_WAIT_MS = 2.0


def _truthy(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


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


def load_overlap(env=None, cores: int | None = None) -> Overlap:
    env = os.environ if env is None else env
    raw = env.get("CVUNET_OVERLAP", "").strip()
    enabled = _truthy(raw) if raw else env.get("CVUNET_DEVICE", "auto").strip().lower() == "cuda"
    max_batch = max(1, int(env.get("CVUNET_MAX_BATCH") or DEFAULT_MAX_BATCH))
    cores = cores or len(os.sched_getaffinity(0))
    # Enough images for a full batch to wait at the device while the cores work on the next ones.
    in_flight = max(2, int(env.get("CVUNET_IN_FLIGHT") or max_batch + min(cores, 8)))
    wait_ms = float(env.get("CVUNET_BATCH_WAIT_MS") or DEFAULT_BATCH_WAIT_MS)
    return Overlap(enabled, in_flight, max_batch, max(0.0, wait_ms) / 1000)
