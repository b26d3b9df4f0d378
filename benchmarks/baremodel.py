"""The model with nothing around it: no queue, no database. Shared by the in-process baseline and
by `bare_process.py`; importing it has no side effects (unlike `harness`)."""

from __future__ import annotations

import time
from collections.abc import Callable


def warmed_up(first_image: bytes) -> Callable[[list[bytes]], tuple[float, list[dict]]]:
    """Load the model, run it once, and return `run(images) -> (seconds, per-image stage timings)`."""
    from cvunet_matting.config import get_settings
    from cvunet_matting.image.encoding import OutputOptions
    from cvunet_matting.image.matting import matte_bytes
    from cvunet_matting.model.session import get_session

    settings = get_settings()
    session = get_session(settings)

    def matte(data: bytes) -> dict:
        return matte_bytes(data, OutputOptions(), session, settings).timings

    matte(first_image)

    def run(images: list[bytes]) -> tuple[float, list[dict]]:
        started = time.perf_counter()
        timings = [matte(data) for data in images]
        return time.perf_counter() - started, timings

    return run
