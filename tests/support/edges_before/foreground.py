"""Foreground colour estimation: take the old background's colour out of the edge pixels.

An edge pixel of a photo is a mix, I = a F + (1 - a) B; keeping I as the cut-out's colour carries the
old background onto any new one (a halo). Blur-fusion (Forte & Pitie, "Approximate Fast Foreground
Colour Estimation", ICIP 2021) estimates F from local means of the foreground and background around
each pixel, in two passes: wide boxes first, then narrow ones seeded with the first estimate.

Only the partly transparent pixels change (the faintest ones partly: FADE). The wide pass runs on a
quarter-size copy (its means are smooth at that scale anyway), the narrow one on the working copy
(band.py), and the final estimate is computed at full size for the band's pixels alone.
"""

from __future__ import annotations

import cv2
import numpy as np

from .band import EDGE_HIGH, band_points, gather, sample, scatter, soft, working_copy

WIDE, NARROW = 90, 6  # box sizes in working-copy pixels (at most 1024 on the long side): the paper's
# Below this alpha (of 255) the estimate only partly replaces the colour: there it is mostly a guess
# from the neighbours, barely visible in any composite, and ISNet leaves such faint alpha over whole
# background areas, whose colours are better left as they are.
FADE = 64
_TINY = np.float32(1e-5)


def _estimate(colour, alpha, fore_mean, back_mean):
    """F = F_mean + a (I - a F_mean - (1 - a) B_mean): the local mean corrected by what I says."""
    return np.clip(fore_mean + alpha * (colour - alpha * fore_mean - (1 - alpha) * back_mean), 0, 1)


def _wide_means(colour: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First pass: alpha-weighted means of the foreground and background, on a quarter-size copy."""
    colour = cv2.resize(colour, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(alpha, (colour.shape[1], colour.shape[0]), interpolation=cv2.INTER_AREA)
    box = (WIDE // 4, WIDE // 4)
    weight = cv2.blur(alpha, box)[..., None]
    fore = cv2.blur(colour * alpha[..., None], box) / (weight + _TINY)
    back = cv2.blur(colour * (1 - alpha[..., None]), box) / (1 - weight + _TINY)
    return fore, back


def _narrow_sums(colour: np.ndarray, alpha: np.ndarray) -> list[np.ndarray]:
    """Second pass on the working copy: box means of a F1, of (1 - a) B1 and of a."""
    fore, back = _wide_means(colour, alpha)
    shape = alpha.shape
    ys, xs = band_points((alpha > 0) & (alpha < 1))
    a = gather(alpha, ys, xs)[:, None]
    alpha3 = cv2.merge([alpha, alpha, alpha])
    weighted = cv2.multiply(colour, alpha3)  # a F1 = a I where a is 0 or 1
    first = _estimate(gather(colour, ys, xs), a, sample(fore, ys, xs, shape), sample(back, ys, xs, shape))
    scatter(weighted, ys, xs, first * a)
    back = cv2.resize(back, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    back = cv2.multiply(back, np.float32(1) - alpha3)
    box = (NARROW, NARROW)
    return [cv2.blur(weighted, box), cv2.blur(back, box), cv2.blur(alpha, box)]


def decontaminate(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Replace the colour of the partly transparent pixels by their estimated foreground; in place."""
    ys, xs = band_points(soft(alpha, 1, EDGE_HIGH - 1))  # nearer opaque, F is I within a few levels
    if not len(ys):
        return rgb
    fore, back, weight = (sample(s, ys, xs, alpha.shape) for s in _narrow_sums(working_copy(rgb), working_copy(alpha)))
    fore, back = fore / (weight + _TINY), back / (1 - weight + _TINY)
    a = gather(alpha, ys, xs).astype(np.float32)[:, None] * np.float32(1 / 255)
    pixels = gather(rgb, ys, xs).astype(np.float32) * np.float32(1 / 255)
    fade = np.minimum(a * np.float32(255 / FADE), 1)  # the estimate eases in over the faintest alpha
    estimate = pixels + fade * (_estimate(pixels, a, fore, back) - pixels)
    scatter(rgb, ys, xs, (estimate * 255 + 0.5).astype(np.uint8))
    return rgb
