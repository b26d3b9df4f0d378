"""Where each output pixel of a resize or a box filter reads, and with what weight: OpenCV's own rules.

The edge suffix (edge_suffix.py) runs the CPU edge steps' resizes and box filters on the device as
gathers along one axis: out[i] = sum over k of x[idx[k, i]] * weight[k, i]. The host works out
idx and weight here (a few vectors as long as the image's sides), by the very rules of the OpenCV calls
the CPU path makes, so the device's result is theirs to within float rounding: the half-pixel centres
and clamped borders of INTER_LINEAR, INTER_AREA's partial cells, INTER_NEAREST's floor, and the
reflected borders of the box filters.
"""

from __future__ import annotations

import math

import numpy as np

Taps = tuple[np.ndarray, np.ndarray]  # idx (K x n, int64) and weight (K x n, float32)

_RESIZE_ONE = 2048  # INTER_LINEAR's fixed-point unit for uint8 images (INTER_RESIZE_COEF_SCALE)


def _pack(idx: list[np.ndarray], weight: list[np.ndarray]) -> Taps:
    return np.stack(idx).astype(np.int64), np.stack(weight).astype(np.float32)


def identity(n: int) -> Taps:
    return _pack([np.arange(n)], [np.ones(n)])


def linear(src: int, dst: int, quantised: bool = False) -> Taps:
    """cv2.resize INTER_LINEAR along one axis; `quantised`: a uint8 image's weights, in 1/2048ths."""
    if src == dst:
        return identity(dst)
    x = ((np.arange(dst) + 0.5) * (src / dst) - 0.5).astype(np.float32)
    left = np.floor(x)
    frac = (x - left).astype(np.float64)
    left = left.astype(np.int64)
    frac[left < 0], left[left < 0] = 0.0, 0
    last = left >= src - 1
    frac[last], left[last] = 0.0, src - 1
    if quantised:
        w0 = np.round((1 - frac) * _RESIZE_ONE) / _RESIZE_ONE
        w1 = np.round(frac * _RESIZE_ONE) / _RESIZE_ONE
    else:
        w0, w1 = 1 - frac, frac
    return _pack([left, np.minimum(left + 1, src - 1)], [w0, w1])


def remap(src: int, dst: int) -> Taps:
    """band.sample_columns' bilinear lookup (cv2.remap, replicated border, float maps): OpenCV 5 samples float
    coordinates as they are (measured: within 4e-7 of exact bilinear), so INTER_LINEAR's taps."""
    return linear(src, dst)


def nearest(src: int, dst: int) -> Taps:
    """cv2.resize INTER_NEAREST along one axis."""
    return _pack([np.minimum(np.floor(np.arange(dst) * (src / dst)).astype(np.int64), src - 1)], [np.ones(dst)])


def area(src: int, dst: int, scale: float | None = None) -> Taps:
    """cv2.resize INTER_AREA shrinking along one axis: each output pixel averages the source cells it
    covers, partial cells by their share; `scale`: the source pixels per output pixel when the call gave
    fx/fy (then the last cell may be cut short by the image's end), else src / dst."""
    if src == dst and scale is None:
        return identity(dst)
    scale = src / dst if scale is None else scale
    taps = math.ceil(scale) + 1
    idx, weight = np.zeros((taps, dst), np.int64), np.zeros((taps, dst))
    for i in range(dst):
        start, end = i * scale, (i + 1) * scale
        cell = min(scale, src - start)
        first = math.floor(start)
        for k in range(taps):
            j = min(first + k, src - 1)
            share = max(0.0, min(j + 1, end) - max(j, start)) if first + k < src else 0.0
            idx[k, i], weight[k, i] = j, share / cell if share > 1e-3 else 0.0
    return idx, weight.astype(np.float32)


def _fold(i: np.ndarray, n: int, reflect_101: bool) -> np.ndarray:
    """Indices outside 0..n-1 reflected back in, again and again for a window wider than the image
    (OpenCV's borderInterpolate): BORDER_REFLECT_101 (gfedcb|abcdefgh) or BORDER_REFLECT (fedcba|abcdef)."""
    if n == 1:
        return np.zeros_like(i)
    if reflect_101:
        period = 2 * n - 2
        j = np.abs(i) % period
        return np.where(j >= n, period - j, j)
    j = i % (2 * n)
    return np.where(j >= n, 2 * n - 1 - j, j)


def box(n: int, size: int, reflect_101: bool) -> Taps:
    """A normalised box of `size` along one axis, anchored at its centre (size // 2), as cv2.blur and
    cv2.boxFilter place it; reflect_101: cv2.blur's default border, else BORDER_REFLECT."""
    offsets = np.arange(size)[:, None] - size // 2
    idx = _fold(np.arange(n)[None, :] + offsets, n, reflect_101)
    return idx.astype(np.int64), np.full(idx.shape, 1 / size, np.float32)


def apply(image: np.ndarray, taps: Taps, axis: int) -> np.ndarray:
    """The taps applied on the host (numpy), as the suffix applies them on the device: for tests."""
    idx, weight = taps
    shape = [1] * image.ndim
    shape[axis] = -1
    return sum(np.take(image, idx[k], axis=axis) * weight[k].reshape(shape) for k in range(len(idx)))
