"""Area-average shrinking, shared by the model's input (model/session.py) and the edge steps' working
copies (image/band.py): a foundation of its own, so that the web side, which renders cut-outs again
from their raw mattes (image/rendering.py), reaches the edge steps without reaching the model.
"""

from __future__ import annotations

import cv2
import numpy as np


def shrink(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-average resize to width x height, in two steps for a large image.

    OpenCV's area resize has a fast path for whole-number factors and a slow general one: halving a
    12 MP photo first (fast path) and then resizing the quarter-size image takes 11 ms instead of 26,
    for the same averaging within a grey level or two.
    """
    return cv2.resize(_whole_blocks(image, width, height), (width, height), interpolation=cv2.INTER_AREA)


def shrink_float(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """shrink() with its second step in float32: levels 0-255 with the average's fractions kept. OpenCV's
    general area path runs a third faster on floats than on bytes (1600x1200 to 512x384: 1.2 against
    1.8 ms of CPU)."""
    blocks = _whole_blocks(image, width, height).astype(np.float32)
    return cv2.resize(blocks, (width, height), interpolation=cv2.INTER_AREA)


def _whole_blocks(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """shrink()'s first step: whole blocks of the largest factor that keeps the image at least
    width x height (the image as it is where that factor is 1)."""
    factor = min(image.shape[1] // width, image.shape[0] // height)
    if factor < 2:
        return image
    # Whole blocks only (at most factor-1 edge rows and columns dropped), so blocks stay aligned.
    rows, cols = image.shape[0] - image.shape[0] % factor, image.shape[1] - image.shape[1] % factor
    return cv2.resize(image[:rows, :cols], None, fx=1 / factor, fy=1 / factor, interpolation=cv2.INTER_AREA)


def shrink_for_model(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """shrink() for the model's input: bilinear where each side shrinks by a factor under 2.

    OpenCV's area resize between whole factors is its slow general path: 15 of the 15.5 ms of CPU the
    worker spent preparing a 1600x1200 photo for ISNet's 1024 x 1024, where bilinear takes ~4. Over
    a factor between 1 and 2, bilinear still weighs every source pixel; the model's input moves by a
    quarter of a grey level on average, and benchmarks/bench_quality.py --size 1600x1200 scored the cut-outs
    as good or slightly better on every figure (SAD 17.08 -> 16.97, 2026-12-06). Larger shrinks (where
    bilinear would skip pixels) and enlarged sides are left to shrink().
    """
    rows, cols = image.shape[:2]
    if height <= rows < 2 * height and width <= cols < 2 * width:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return shrink(image, width, height)
