"""Foreground colour estimation: take the old background's colour out of the edge pixels.

An edge pixel of a photo is a mix, I = a F + (1 - a) B; keeping I as the cut-out's colour carries the
old background onto any new one (a halo). Blur-fusion (Forte & Pitie, "Approximate Fast Foreground
Colour Estimation", ICIP 2021) estimates F from local means of the foreground and background around
each pixel, in two passes: wide boxes first, then narrow ones seeded with the first estimate.

Only the partly transparent pixels change (the faintest ones partly: FADE). Both passes run on small
copies whose means are smooth at their scale anyway: the narrow one on a copy at most SIDE pixels on
its long side (the guided filter's own copy, edges.refine, when the caller shares it), the wide one on
half of that; the final estimate is computed at full size for the band's pixels alone. The boxes were
6 and 90 pixels of a 1024-pixel copy (or of the image, if smaller) until the copy was halved (make
bench-pipeline: the narrow pass was a third of a 1600x1200 photo's host CPU): they cover the same
share of the image as before, in fewer pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from .band import EDGE_HIGH, band_points, flat_index, put, quick_copy, sample_all, soft, take, working_copy

SIDE = 512  # the narrow pass's copy, on its long side
# The paper's box sizes, in pixels of a copy 1024 pixels on its long side (or of the image itself
# where it is smaller): the boxes cover the same share of any image as they did before the copy was halved.
WIDE, NARROW, UNIT_SIDE = 90, 6, 1024
# Below this alpha (of 255) the estimate only partly replaces the colour: there it is mostly a guess
# from the neighbours, barely visible in any composite, and ISNet leaves such faint alpha over whole
# background areas, whose colours are better left as they are.
FADE = 64
_TINY = np.float32(1e-5)
_ABOVE_0, _BELOW_1 = float(np.nextafter(np.float32(0), 1)), float(np.nextafter(np.float32(1), 0))


def _estimate(colour, alpha, fore_mean, back_mean):
    """F = F_mean + a (I - a F_mean - (1 - a) B_mean): the local mean corrected by what I says."""
    return np.clip(fore_mean + alpha * (colour - alpha * fore_mean - (1 - alpha) * back_mean), 0, 1)


def _unit(copy: tuple[int, ...], full: tuple[int, ...]) -> float:
    """The copy's pixels per pixel of the boxes' own copy (UNIT_SIDE on its long side, or full size)."""
    return max(copy[:2]) / min(max(full[:2]), UNIT_SIDE)


def _wide_means(colour: np.ndarray, alpha: np.ndarray, unit: float) -> tuple[np.ndarray, np.ndarray]:
    """First pass: alpha-weighted means of the foreground and background, on a half-size copy."""
    if min(colour.shape[:2]) > 1:
        colour = cv2.resize(colour, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    else:  # a photo one pixel high or wide: fx=0.5 would ask OpenCV for a side of none, which it refuses
        half = (max(1, round(colour.shape[1] * 0.5)), max(1, round(colour.shape[0] * 0.5)))
        colour = cv2.resize(colour, half, interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(alpha, (colour.shape[1], colour.shape[0]), interpolation=cv2.INTER_AREA)
    size = max(1, round(WIDE * unit / 2))
    box = (size, size)
    weight = cv2.blur(alpha, box)[..., None]
    fore = cv2.blur(colour * alpha[..., None], box) / (weight + _TINY)
    back = cv2.blur(colour * (1 - alpha[..., None]), box) / (1 - weight + _TINY)
    return fore, back


def _narrow_sums(colour: np.ndarray, alpha: np.ndarray, unit: float) -> list[np.ndarray]:
    """Second pass on the small copy: box means of a F1 and a (four channels, one pass) and of
    (1 - a) B1 (each array made once and filtered in place: fewer buffers and passes)."""
    fore, back = _wide_means(colour, alpha, unit)
    shape = alpha.shape
    ys, xs = band_points(cv2.inRange(alpha, _ABOVE_0, _BELOW_1))  # 0 < a < 1
    at = flat_index(shape, ys, xs)
    a = take(alpha, at)[:, None]
    weighted = np.empty((*shape, 4), np.float32)  # a F1 (= a I where a is 0 or 1), then a
    np.multiply(colour, alpha[..., None], out=weighted[..., :3])
    weighted[..., 3] = alpha
    first = _estimate(take(colour, at), a, *sample_all([fore, back], ys, xs, shape))
    weighted.reshape(-1, 4)[at, :3] = first * a
    back = cv2.resize(back, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    np.multiply(back, (np.float32(1) - alpha)[..., None], out=back)
    size = max(1, round(NARROW * unit))
    box = (size, size)
    return [cv2.blur(weighted, box, dst=weighted), cv2.blur(back, box, dst=back)]


def decontaminate(rgb: np.ndarray, alpha: np.ndarray, rgb_copy: np.ndarray | None = None) -> np.ndarray:
    """Replace the colour of the partly transparent pixels by their estimated foreground; in place.
    `rgb_copy`: band.working_copy(rgb, SIDE), when the caller has it already (finish() shares it)."""
    ys, xs = band_points(soft(alpha, 1, EDGE_HIGH - 1))  # nearer opaque, F is I within a few levels
    if not len(ys):
        return rgb
    colour = working_copy(rgb, SIDE) if rgb_copy is None else rgb_copy
    # The matte's copy is box-filtered: a quick one will do.
    sums = _narrow_sums(colour, quick_copy(alpha, SIDE), _unit(colour.shape, rgb.shape))
    fore_weight, back = sample_all(sums, ys, xs, alpha.shape)
    weight = fore_weight[:, 3:]
    fore, back = fore_weight[:, :3] / (weight + _TINY), back / (1 - weight + _TINY)
    at = flat_index(alpha.shape, ys, xs)
    a = np.multiply(take(alpha, at), np.float32(1 / 255), dtype=np.float32)[:, None]
    pixels = np.multiply(take(rgb, at), np.float32(1 / 255), dtype=np.float32)
    fade = np.minimum(a * np.float32(255 / FADE), 1)  # the estimate eases in over the faintest alpha
    estimate = pixels + fade * (_estimate(pixels, a, fore, back) - pixels)
    put(rgb, at, (estimate * 255 + 0.5).astype(np.uint8))
    return rgb
