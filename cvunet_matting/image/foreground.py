"""Foreground colour estimation: take the old background's colour out of the edge pixels.

An edge pixel of a photo is a mix, I = a F + (1 - a) B; keeping I as the cut-out's colour carries the
old background onto any new one (a halo). Blur-fusion (Forte & Pitie, "Approximate Fast Foreground
Colour Estimation", ICIP 2021) estimates F from local means of the foreground and background around
each pixel, in two passes: wide boxes first, then narrow ones seeded with the first estimate.

Only the partly transparent pixels change (the faint ones partly: FADE; the faintest not at all:
COLOUR_LOW). Both passes run on small copies whose means are smooth at their scale anyway: the narrow
one on a copy at most SIDE pixels on its long side (the guided filter's own copy, edges.refine, when the
caller shares it), the wide one on a quarter of that (WIDE_FX); the final estimate is computed at full
size for the band's pixels alone. The boxes were 6 and 90 pixels of a 1024-pixel copy (or of the
image, if smaller) until the copy was halved (make bench-pipeline: the narrow pass was a third of a
1600x1200 photo's host CPU): they cover the same share of the image as before, in fewer pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from .band import (
    EDGE_HIGH,
    band_points,
    band_strips,
    box_mean,
    flat_index,
    linear_copy,
    put,
    sample_columns,
    soft,
    take,
    working_planes,
)

SIDE = 512  # the narrow pass's copy, on its long side
# The paper's box sizes, in pixels of a copy 1024 pixels on its long side (or of the image itself
# where it is smaller): the boxes cover the same share of any image as they did before the copy was halved.
WIDE, NARROW, UNIT_SIDE = 90, 6, 1024
# The wide pass's copy, as a share of the narrow pass's: a quarter (128 pixels on its long side) scored
# as well as a half in make bench-quality (colour error 5.695 -> 5.673, halo 5.844 -> 5.851; see-through
# composites 4.260 -> 4.212, 15.054 -> 15.061) at a third of the pass's CPU. Its boxes are 90 pixels
# of a 1024-pixel copy: they average so widely that the copy's size hardly shows in them.
WIDE_FX = 0.25
# Below this alpha (of 255) the estimate only partly replaces the colour: there it is mostly a guess
# from the neighbours, barely visible in any composite, and ISNet leaves such faint alpha over whole
# background areas, whose colours are better left as they are.
FADE = 64
# Fainter still, the colour is left as it is: the estimate would move it by at most COLOUR_LOW / FADE of
# the way, in pixels a composite shows at under 2% (make bench-quality: colour error 5.695 -> 5.706,
# halo 5.844 -> 5.845). They were a third of a photo's band (1600x1200: 28,600 of 94,400 pixels).
COLOUR_LOW = 5
_TINY = np.float32(1e-5)
_ABOVE_0, _BELOW_1 = float(np.nextafter(np.float32(0), 1)), float(np.nextafter(np.float32(1), 0))


def _estimate(colour, alpha, fore_mean, back_mean):
    """F = F_mean + a (I - a F_mean - (1 - a) B_mean): the local mean corrected by what I says."""
    return np.clip(fore_mean + alpha * (colour - alpha * fore_mean - (1 - alpha) * back_mean), 0, 1)


def _unit(copy: tuple[int, ...], full: tuple[int, ...]) -> float:
    """The copy's pixels per pixel of the boxes' own copy (UNIT_SIDE on its long side, or full size)."""
    return max(copy[:2]) / min(max(full[:2]), UNIT_SIDE)


def _shrunk(image: np.ndarray, fx: float) -> np.ndarray:
    """An area-average copy `fx` the size (a side too short for that keeps one pixel)."""
    if all(round(side * fx) >= 1 for side in image.shape[:2]):
        return cv2.resize(image, None, fx=fx, fy=fx, interpolation=cv2.INTER_AREA)
    # a photo a few pixels high or wide: fx would ask OpenCV for a side of none, which it refuses
    size = (max(1, round(image.shape[1] * fx)), max(1, round(image.shape[0] * fx)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _wide_means(colour: list[np.ndarray], alpha: np.ndarray, unit: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """First pass: alpha-weighted means of the foreground and background (three planes each), on a
    copy WIDE_FX the size (shrunk as one three-channel image: OpenCV's area resize of a plane differs
    from its interleaved one in the last bit)."""
    planes = cv2.split(_shrunk(cv2.merge(colour), WIDE_FX))
    alpha = cv2.resize(alpha, (planes[0].shape[1], planes[0].shape[0]), interpolation=cv2.INTER_AREA)
    size = max(1, round(WIDE * unit * WIDE_FX))
    box = (size, size)
    weight = cv2.blur(alpha, box)
    rest, fore_norm, back_norm = 1 - alpha, weight + _TINY, 1 - weight + _TINY
    fore = [cv2.blur(plane * alpha, box) / fore_norm for plane in planes]
    back = [cv2.blur(plane * rest, box) / back_norm for plane in planes]
    return fore, back


def _narrow_sums(colour: list[np.ndarray], alpha: np.ndarray, unit: float) -> list[np.ndarray]:
    """Second pass on the small copy: box means of a F1 and a (four channels), of (1 - a) B1 (three)."""
    fore, back = _wide_means(colour, alpha, unit)
    shape = alpha.shape
    ys, xs = band_points(cv2.inRange(alpha, _ABOVE_0, _BELOW_1))  # 0 < a < 1
    at = flat_index(shape, ys, xs)
    a = take(alpha, at)
    means = sample_columns([cv2.merge(fore), cv2.merge(back)], ys, xs, shape)
    weighted = [plane * alpha for plane in colour]  # a F1 (= a I where a is 0 or 1)
    for plane, source, fore_mean, back_mean in zip(weighted, colour, means[:3], means[3:], strict=True):
        put(plane, at, _estimate(take(source, at), a, fore_mean, back_mean) * a)
    rest = np.float32(1) - alpha
    back = [cv2.resize(plane, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR) * rest for plane in back]
    size = max(1, round(NARROW * unit))
    return [box_mean(image, size, image) for image in (cv2.merge([*weighted, alpha]), cv2.merge(back))]


def writable(rgb: np.ndarray) -> bool:
    """Whether decontaminate() may write into this array as it is (else: into a copy)."""
    return bool(rgb.flags.writeable and rgb.flags.c_contiguous)


def decontaminate(
    rgb: np.ndarray,
    alpha: np.ndarray,
    rgb_copy: list[np.ndarray] | None = None,
    matte_copy: np.ndarray | None = None,
) -> np.ndarray:
    """Replace the colour of the partly transparent pixels by their estimated foreground; in place (a
    writable(), C-contiguous array: band.put refuses a view it could not write through).
    `rgb_copy`: band.working_planes(rgb, SIDE), when the caller has them already (finish() shares them);
    `matte_copy`: the copy of the matte to weigh the means by, at its size (else band.linear_copy(alpha))."""
    sums = None
    for ys, xs in band_strips(soft(alpha, COLOUR_LOW, EDGE_HIGH - 1)):  # nearer opaque, F is I within a few levels
        if sums is None:  # the first strip with a point: the small copy's passes, once
            colour = working_planes(rgb, SIDE) if rgb_copy is None else rgb_copy
            matte = linear_copy(alpha, SIDE) if matte_copy is None else matte_copy
            sums = _narrow_sums(colour, matte, _unit(colour[0].shape, rgb.shape))
        _estimate_at(rgb, alpha, sums, ys, xs)
    return rgb


def _estimate_at(rgb: np.ndarray, alpha: np.ndarray, sums: list[np.ndarray], ys: np.ndarray, xs: np.ndarray) -> None:
    """The final estimate at full-size points (ys, xs), written into rgb. _estimate multiplied out, in
    alpha's levels: F = F_mean (1 - a^2) + a I - a (1 - a) B_mean, the two means' factors made once for
    the three channels (F_mean = fore / (weight + tiny), B_mean = back / (1 - weight + tiny)): 12 passes
    over the points a channel instead of 16, two of them divisions."""
    *fore_weighted, weight, back_r, back_g, back_b = sample_columns(sums, ys, xs, alpha.shape)
    at = flat_index(alpha.shape, ys, xs)
    a = np.multiply(take(alpha, at), np.float32(1 / 255), dtype=np.float32)
    rest = 1 - a
    fore_gain = (1 + a) * rest * np.float32(255) / (weight + _TINY)
    back_gain = a * rest * np.float32(255) / (1 - weight + _TINY)
    fade = np.minimum(a * np.float32(255 / FADE), 1)  # the estimate eases in over the faintest alpha
    pixels = take(rgb, at)
    estimate = np.empty_like(pixels)
    level, fix, term = np.empty_like(a), np.empty_like(a), np.empty_like(a)
    for k, (fore, back) in enumerate(zip(fore_weighted, (back_r, back_g, back_b), strict=True)):
        level[...] = pixels[:, k]  # I, in levels
        np.multiply(fore, fore_gain, out=fix)
        fix += np.multiply(level, a, out=term)
        fix -= np.multiply(back, back_gain, out=term)
        np.clip(fix, 0, 255, out=fix)
        fix -= level  # I + fade (F - I), rounded
        fix *= fade
        fix += level
        fix += np.float32(0.5)
        estimate[:, k] = fix
    put(rgb, at, estimate)
