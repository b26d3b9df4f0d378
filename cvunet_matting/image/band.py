"""The edge band of a matte: a small working copy for the wide filters, and full-size pixels to fix.

The filters that need context (box blurs tens of pixels wide) run on a copy no larger than the model's
own resolution; only the pixels of the edge band are then computed at full size, from the copy's
results sampled bilinearly. A 12 MP photo's band is a few percent of its pixels.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from cvunet_matting.resize import shrink_float

WORK_SIDE = 1024  # the long side of the working copy: ISNet's own 1024 x 1024, so nothing is lost


def working_scale(shape: tuple[int, ...], side: int = WORK_SIDE) -> float:
    """The working copy's size over the full size (1 when the image is no larger than `side`)."""
    return min(1.0, side / max(shape[:2]))


def working_size(shape: tuple[int, ...], side: int = WORK_SIDE) -> tuple[int, int]:
    """(width, height) of the working copy of an image of this shape."""
    scale = working_scale(shape, side)
    height, width = shape[:2]
    return max(1, round(width * scale)), max(1, round(height * scale))


def working_planes(image: np.ndarray, side: int = WORK_SIDE) -> list[np.ndarray]:
    """A colour image's working copy: area-shrunk to at most `side` pixels on its long side, as one
    float32 plane in 0-1 per channel. The filters work plane by plane: numpy's arithmetic over a last
    axis of 3 runs its inner loop 3 long, several times slower than over a plane (make bench-pipeline).
    The area step after the whole blocks is kept in float (resize.shrink_float): make bench-quality scored
    it as the rounded copy, a few figures a hair better (edge band SAD 19.843 -> 19.836)."""
    if working_scale(image.shape, side) < 1.0:
        image = shrink_float(image, *working_size(image.shape, side))
    return [unit_copy(plane) for plane in cv2.split(image)]


def linear_copy(image: np.ndarray, side: int = WORK_SIDE) -> np.ndarray:
    """A matte's working copy: float32 in 0-1, shrunk bilinearly to at most `side` pixels on its long
    side (as solid.distances shrinks it, whose copy callers pass on: unit_copy). Not an area average:
    a matte is itself an enlarged model answer, and its bilinear copy keeps the edges the guided filter
    fits to. make bench-quality scored it better than the area copy (whole blocks, then bilinear) on every
    figure (edge band SAD 20.51 -> 19.84, colour error 5.68 -> 5.54, halo 5.85 -> 5.70), at a third of the
    cost, and nothing where the caller has the distance maps' copy already."""
    if working_scale(image.shape, side) < 1.0:
        image = cv2.resize(image, working_size(image.shape, side), interpolation=cv2.INTER_LINEAR)
    return unit_copy(image)


def unit_copy(small: np.ndarray) -> np.ndarray:
    """A uint8 copy as float32 in 0-1."""
    return np.multiply(small, np.float32(1 / 255), dtype=np.float32)


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


# The full-size band is worked on a strip of rows at a time, each at most this many pixels: its points'
# arrays then stay under the allocator's mmap threshold (malloc.py), on the heap and reused, instead of
# mappings of tens of MB faulted in afresh (12 MP: 140 of the edge steps' 380 ms went to a 32 MB remap
# output and its split into planes).
STRIP_PIXELS = 1 << 20


def band_strips(mask: np.ndarray, pixels: int = STRIP_PIXELS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """band_points() of the mask, a strip of rows at a time (rows in the whole mask's numbering);
    strips with no point are skipped."""
    step = max(1, pixels // max(1, mask.shape[1]))
    for top in range(0, mask.shape[0], step):
        ys, xs = band_points(mask[top : top + step])
        if len(ys):
            yield ys + top, xs


def flat_index(shape: tuple[int, ...], ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The points' positions in the image's pixels laid out in one row (for take and put)."""
    at = ys.astype(np.intp)  # in place from here: one array of the points' size, not three
    at *= shape[1]
    at += xs
    return at


def take(image: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The pixels at flat positions `at` as N x C (N for a single-channel image): image[ys, xs],
    faster than fancy indexing, with the positions computed once for every map of the same size."""
    if image.ndim == 3 and image.dtype == np.uint8 and image.flags.c_contiguous:
        # Each pixel taken as one item of its width: a third less time than numpy's rows of 3 bytes.
        pixels = image.reshape(-1, image.shape[2]).view(np.dtype((np.void, image.shape[2]))).reshape(-1)
        return np.take(pixels, at).view(np.uint8).reshape(len(at), image.shape[2])
    return np.take(image.reshape(-1, *(image.shape[2:] or ())), at, axis=0)


def put(image: np.ndarray, at: np.ndarray, values: np.ndarray) -> None:
    """The pixels at flat positions `at` set to `values`, in place (a C-contiguous image). A pixel of
    several channels is written as one item of their width: numpy's row-by-row assignment of N x 3
    values took four times as long."""
    if not image.flags.c_contiguous:
        raise ValueError("put() writes into a C-contiguous image only")
    if image.ndim == 2:
        image.reshape(-1)[at] = values  # a quarter of np.put's time for one byte a pixel (its checks per point)
        return
    pixel = np.dtype((np.void, image.dtype.itemsize * image.shape[2]))
    rows = np.ascontiguousarray(values, image.dtype).reshape(len(at), image.shape[2])
    np.put(image.reshape(-1, image.shape[2]).view(pixel).reshape(-1), at, rows.view(pixel).reshape(-1))


def _grid(ys: np.ndarray, xs: np.ndarray, shape: tuple[int, ...], full: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """The points' positions in a copy of `shape`, laid out 1024 to a row (remap wants 2-D maps)."""
    count = len(ys)
    rows = -(-count // 1024)
    maps = []
    for points, scale in ((xs, shape[1] / full[1]), (ys, shape[0] / full[0])):
        grid = np.empty(rows * 1024, np.float32)
        grid[count:] = 0
        # (p + 0.5) * scale - 0.5, step by step in the map itself: no temporaries of the points' size
        head = grid[:count]
        head[...] = points
        head += np.float32(0.5)
        head *= np.float32(scale)
        head -= np.float32(0.5)
        maps.append(grid.reshape(rows, 1024))
    return maps[0], maps[1]


def sample_columns(images: list[np.ndarray], ys: np.ndarray, xs: np.ndarray, full: tuple[int, int]) -> list[np.ndarray]:
    """Values of working-copy maps of one size at full-size points (ys, xs), bilinear with pixel centres
    aligned: each channel's N values, the first image's channels then the next's, as strided views of
    one N x C array an image (the band's arithmetic reads each value once: split copies cost 1600x1200
    ~0.5 ms more). An image of several channels (up to four) is sampled in one remap: remap's cost is
    mostly per point, not per channel (and its rounding depends on the channel count, so the images
    are sampled as they are given); the coordinate maps are made once for all."""
    count, shape = len(ys), images[0].shape[:2]
    if not count:
        return [np.empty(0, image.dtype) for image in images for _ in range(image.shape[2] if image.ndim == 3 else 1)]
    if shape == full:
        at = flat_index(shape, ys, xs)
        sampled = [take(image, at).reshape(count, -1) for image in images]
    else:
        grid_x, grid_y = _grid(ys, xs, shape, full)
        sampled = []
        for image in images:
            values = cv2.remap(image, grid_x, grid_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            sampled.append(values.reshape(len(grid_x) * 1024, -1)[:count])
    return [points[:, k] for points in sampled for k in range(points.shape[1])]


def box_mean(
    image: np.ndarray, size: int, out: np.ndarray | None = None, border: int = cv2.BORDER_DEFAULT
) -> np.ndarray:
    """The mean over size x size pixels of a float32 image (in place where out is the image).

    Two passes of a float kernel (cv2.sepFilter2D): on the copies' planes a quarter faster than
    cv2.boxFilter, whose running sums are doubles, to within a float's last bit (1e-7)."""
    kernel = np.full(size, 1 / size, np.float32)
    return cv2.sepFilter2D(image, -1, kernel, kernel, dst=out, borderType=border)


def grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """The mask (uint8 0/1) grown by `radius` pixels with a square window."""
    if radius <= 0:
        return mask
    return cv2.dilate(mask, np.ones((2 * radius + 1, 2 * radius + 1), np.uint8))


def to_full(mask: np.ndarray, full: tuple[int, int]) -> np.ndarray:
    """A working-copy mask (uint8) at full size, nearest neighbour."""
    if mask.shape == full:
        return mask
    # OpenCV's INTER_NEAREST takes source column floor(x * (1 / (full width / width))), in doubles
    # as written, and rows alike: two takes of whole columns and rows give its very bytes in half its
    # time (1600x1200: 0.5 against 1.0 ms of CPU).
    return np.take(np.take(mask, _nearest(mask.shape[1], full[1]), axis=1), _nearest(mask.shape[0], full[0]), axis=0)


def _nearest(small: int, large: int) -> np.ndarray:
    """For each of `large` positions, the source position cv2.resize's INTER_NEAREST reads."""
    return np.minimum(np.floor(np.arange(large) * (1.0 / (large / small))).astype(np.intp), small - 1)
