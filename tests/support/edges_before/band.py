"""The edge band of a matte: a small working copy for the wide filters, and full-size pixels to fix.

The filters that need context (box blurs tens of pixels wide) run on a copy no larger than the model's
own resolution; only the pixels of the edge band are then computed at full size, from the copy's
results sampled bilinearly. A 12 MP photo's band is a few percent of its pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from cvunet_matting.resize import shrink

WORK_SIDE = 1024  # the long side of the working copy: ISNet's own 1024 x 1024, so nothing is lost


def working_scale(shape: tuple[int, ...], side: int = WORK_SIDE) -> float:
    """The working copy's size over the full size (1 when the image is no larger than `side`)."""
    return min(1.0, side / max(shape[:2]))


def working_copy(image: np.ndarray, side: int = WORK_SIDE) -> np.ndarray:
    """A float32 copy in 0-1, area-shrunk to at most `side` pixels on its long side."""
    scale = working_scale(image.shape, side)
    if scale < 1.0:
        height, width = image.shape[:2]
        image = shrink(image, max(1, round(width * scale)), max(1, round(height * scale)))
    return image.astype(np.float32) * np.float32(1 / 255)


# ISNet leaves a tenth of a photo's pixels at 250-254 inside the subject, and faint alpha over the
# background: neither is an edge, and treating them as one would cost up to three times as much.
EDGE_LOW, EDGE_HIGH = 5, 250


def soft(alpha: np.ndarray, low: int = 1, high: int = 254) -> np.ndarray:
    """The pixels of a uint8 matte between low and high (inclusive), as a 0/255 mask."""
    return cv2.inRange(alpha, low, high)


def band_points(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of a mask's set pixels (bool or uint8), in row order."""
    found = cv2.findNonZero(mask.view(np.uint8) if mask.dtype == bool else mask)
    if found is None:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    points = found.reshape(-1, 2)
    return points[:, 1], points[:, 0]


def _flat(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    return ys.astype(np.intp) * image.shape[1] + xs


def gather(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """image[ys, xs] as N x C (N for a single-channel image), faster than fancy indexing."""
    channels = image.shape[2:] or ()
    return np.take(image.reshape(-1, *channels), _flat(image, ys, xs), axis=0)


def scatter(image: np.ndarray, ys: np.ndarray, xs: np.ndarray, values: np.ndarray) -> None:
    """image[ys, xs] = values, in place."""
    image.reshape(-1, *(image.shape[2:] or ()))[_flat(image, ys, xs)] = values


def sample(small: np.ndarray, ys: np.ndarray, xs: np.ndarray, full: tuple[int, int]) -> np.ndarray:
    """Values of a working-copy map at full-size pixels, bilinear with pixel centres aligned: N x C."""
    channels = 1 if small.ndim == 2 else small.shape[2]
    if small.shape[:2] == full:
        return gather(small, ys, xs).reshape(len(ys), channels)
    count = len(ys)
    rows = -(-count // 1024)  # remap wants a 2-D map: the points laid out 1024 to a row
    map_x = np.zeros(rows * 1024, np.float32)
    map_y = np.zeros(rows * 1024, np.float32)
    map_x[:count] = (xs.astype(np.float32) + 0.5) * np.float32(small.shape[1] / full[1]) - 0.5
    map_y[:count] = (ys.astype(np.float32) + 0.5) * np.float32(small.shape[0] / full[0]) - 0.5
    shape = (rows, 1024)
    values = cv2.remap(
        small, map_x.reshape(shape), map_y.reshape(shape), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return values.reshape(rows * 1024, channels)[:count]


def grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """The mask (uint8 0/1) grown by `radius` pixels with a square window."""
    if radius <= 0:
        return mask
    return cv2.dilate(mask, np.ones((2 * radius + 1, 2 * radius + 1), np.uint8))


def to_full(mask: np.ndarray, full: tuple[int, int]) -> np.ndarray:
    """A working-copy mask (uint8) at full size, nearest neighbour."""
    if mask.shape == full:
        return mask
    return cv2.resize(mask, (full[1], full[0]), interpolation=cv2.INTER_NEAREST)
