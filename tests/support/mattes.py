"""A realistic matte for benchmarks: the real ISNet's own alpha of a real photo, at any size.

Benchmarks of the CPU stages need a matte shaped like the model's: mostly 0 and 255 with a thin soft
band along the subject's outline. A uniform grey makes every pixel an edge (the edge steps then cost
many times what they do on a photo); a constant 1 or a hard rectangle makes none (they cost nothing).

The matte is the model's answer for scikit-image's astronaut (the photo `make bench-quality` and
`make bench-rerender` use too) at the model's own resolution, computed once with the real model
(`make model`) and cached outside the repository; `realistic_alpha` upscales it bilinearly, as
model/session.py's alpha_from_output does with every answer. At any size about half of the frame is
subject (alpha >= 128) and one pixel in nineteen is in the edge band (alpha 5-250, as image/band.py
counts it); a further tenth is faint (1-4 or 251-254), as ISNet leaves it (see `describe`).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from cvunet_matting.config import Settings

PHOTO = "astronaut"  # skimage.data's portrait: a subject with hair, a flag and a suit's edges


def cache_dir() -> Path:
    """Where the computed matte is kept: beside the model cache, outside the repository."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cvunet-matting" / "bench-mattes"


def photo_rgb(width: int | None = None, height: int | None = None) -> np.ndarray:
    """The photo (HxWx3 uint8 RGB), resized bicubically to width x height when they are given."""
    from skimage import data

    rgb = getattr(data, PHOTO)()
    if width and height and (width, height) != (rgb.shape[1], rgb.shape[0]):
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(rgb)


def photo_jpeg(width: int, height: int, quality: int = 92) -> bytes:
    """The photo at width x height as a JPEG, as a camera or phone sends one."""
    bgr = cv2.cvtColor(photo_rgb(width, height), cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buffer.tobytes()


def _compute(settings: Settings) -> np.ndarray:
    """The real model's answer for the photo, as uint8 at the model's own resolution."""
    from cvunet_matting.model.session import MattingSession, alpha_from_output, resolve_model

    session = MattingSession(*resolve_model(settings), settings)
    rgb = photo_rgb()
    raw = session.infer(session.preprocess(rgb))
    height, width = raw.shape[-2:]  # the model's resolution (1024 x 1024 for ISNet)
    return alpha_from_output(raw, session.manifest, height, width)


def _model_key(settings: Settings) -> str:
    """The model file's name and size: a new model computes a new matte."""
    from cvunet_matting.model.session import resolve_model

    path, _ = resolve_model(settings)
    return f"{path.stem}-{path.stat().st_size}"


def model_matte_path(settings: Settings | None = None) -> Path:
    """The cached PNG of the model's answer (uint8 grey, the model's resolution); computed if absent.
    `settings` name the model (CVUNET_MODEL): by default the process's own."""
    from cvunet_matting.config import get_settings

    settings = settings or get_settings()
    path = cache_dir() / f"{PHOTO}-{_model_key(settings)}.png"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp.png")
        cv2.imwrite(str(partial), _compute(settings))
        partial.replace(path)  # atomic: benchmarks started side by side may compute it at once
    return path


@lru_cache(maxsize=1)
def model_matte() -> np.ndarray:
    """The model's answer for the photo (uint8, the model's resolution): what a stand-in device returns."""
    matte = cv2.imread(str(model_matte_path()), cv2.IMREAD_UNCHANGED)
    assert matte is not None and matte.dtype == np.uint8 and matte.ndim == 2
    matte.flags.writeable = False
    return matte


def realistic_alpha(width: int, height: int, matte: np.ndarray | None = None) -> np.ndarray:
    """The model's matte of the photo at width x height (uint8), upscaled as the session upscales it
    (`matte`: model_matte(), or one read from model_matte_path(settings))."""
    matte = model_matte() if matte is None else matte
    if (height, width) == matte.shape:
        return matte.copy()
    return cv2.resize(matte, (width, height), interpolation=cv2.INTER_LINEAR)


def describe(alpha: np.ndarray) -> str:
    """Its shares of subject, edge band and faint alpha, for a benchmark's header."""
    total = alpha.size
    subject = np.count_nonzero(alpha >= 128) / total
    band = np.count_nonzero((alpha >= 5) & (alpha <= 250)) / total
    soft = np.count_nonzero((alpha > 0) & (alpha < 255)) / total
    return f"{subject:.1%} subject (alpha >= 128), {band:.1%} edge band (5-250), {soft - band:.1%} faint (1-4, 251-254)"
