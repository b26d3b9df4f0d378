"""The matte's edges at full size: guided refinement, the user's edge controls, the input's own alpha.

The model sees at most 1024 x 1024 pixels, so a 12 MP photo's matte is upscaled about 4x and its edges
go soft. refine() re-fits the matte to the full-size photo with a colour guided filter (He, Sun & Tang,
"Guided Image Filtering", 2013; the fast variant, 2015): the coefficients come from a small copy
(band.py), and the matte is recomputed at full size, near the edges only, from the full-size colours.
"""

from __future__ import annotations

import cv2
import numpy as np

from . import foreground
from .band import (
    EDGE_HIGH,
    EDGE_LOW,
    band_points,
    band_strips,
    box_mean,
    flat_index,
    grow,
    linear_copy,
    put,
    sample_columns,
    take,
    to_full,
    unit_copy,
    working_planes,
)
from .encoding import OutputOptions
from .foreground import decontaminate, writable
from .solid import Distances, distances, solidify

# The coefficients come from a copy at most SIDE pixels on its long side, in windows of RADIUS around
# each pixel (make bench-quality: 512 and 3 scored better than 1024 and 6, at a quarter of the cost;
# wider windows scored better still on its composites, whose colours differ more than real photos').
SIDE, RADIUS = foreground.SIDE, 3  # one copy serves both steps
EPS = 1e-4  # the regulariser: smaller follows the photo's edges more closely, and its noise too
_PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))  # the colour covariance's six distinct entries


def _box(image: np.ndarray, radius: int, out: np.ndarray | None = None) -> np.ndarray:
    """The mean over a window of `radius`: band.box_mean on a plane; the four-channel coefficients by
    cv2.boxFilter, which is faster than two float passes there."""
    if image.ndim == 2:
        return box_mean(image, 2 * radius + 1, out, cv2.BORDER_REFLECT)
    return cv2.boxFilter(image, -1, (2 * radius + 1, 2 * radius + 1), dst=out, borderType=cv2.BORDER_REFLECT)


def _solve(var: list[np.ndarray], cov: list[np.ndarray], eps: float | np.floating) -> list[np.ndarray]:
    """a = (Sigma + eps U)^-1 cov for N symmetric 3x3 systems (six entries each), by cofactors."""
    rr, rg, rb, gg, gb, bb = var
    rr, gg, bb = rr + eps, gg + eps, bb + eps
    inverse = [gg * bb - gb * gb, rb * gb - rg * bb, rg * gb - rb * gg]  # the first row, then the rest
    inverse += [inverse[1], rr * bb - rb * rb, rg * rb - rr * gb]
    inverse += [inverse[2], inverse[5], rr * gg - rg * rg]
    det = rr * inverse[0] + rg * inverse[1] + rb * inverse[2]
    return [sum(inverse[3 * row + k] * cov[k] for k in range(3)) / det for row in range(3)]


def _dot(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    """a[0] b[0] + a[1] b[1] + a[2] b[2], in that order (the same sums as einsum's "ij,ij->i")."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _coefficients(guide: list[np.ndarray], matte: np.ndarray, radius: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """The filter's mean coefficients (H x W x 4: a for r, g, b, then b) and where they are not 0,0,0,p.

    The guide comes as three planes (band.working_planes) and every product is made plane by plane in
    one scratch array, box-filtered in place and read at the band's points only: numpy over planes, not
    over a last axis of 3 (several times slower), and a few arrays of the copy's size, not twenty."""
    near = grow(((matte >= EDGE_LOW / 255) & (matte <= EDGE_HIGH / 255)).view(np.uint8), radius)
    at = flat_index(matte.shape, *band_points(near))
    mean_matte = _box(matte, radius)
    mm = take(mean_matte, at)
    scratch = np.empty_like(matte)

    def mean(plane: np.ndarray, other: np.ndarray | None = None) -> np.ndarray:
        """The box mean of plane (times other) at the band's points."""
        source = plane if other is None else np.multiply(plane, other, out=scratch)
        return take(_box(source, radius, scratch), at)

    mg = [mean(plane) for plane in guide]
    cov = [mean(plane, matte) - m * mm for plane, m in zip(guide, mg, strict=True)]
    var = [mean(guide[i], guide[j]) - mg[i] * mg[j] for i, j in _PAIRS]
    a = _solve(var, cov, np.float32(eps))
    zero = np.zeros_like(matte)
    coeffs = cv2.merge([zero, zero, zero, mean_matte])  # a = 0, b = the mean away from edges
    put(coeffs, at, np.stack([*a, mm - _dot(a, mg)], axis=1))  # a flat window stays as it is
    return _box(coeffs, radius, coeffs), grow(near, radius)


def refine(
    rgb: np.ndarray,
    alpha: np.ndarray,
    radius: int = RADIUS,
    eps: float = EPS,
    side: int = SIDE,
    rgb_copy: list[np.ndarray] | None = None,
    matte_copy: np.ndarray | None = None,
) -> np.ndarray:
    """The matte re-fitted to the full-size photo's edges; pixels far from an edge keep their value.
    `rgb_copy`: band.working_planes(rgb, side), `matte_copy`: band.linear_copy(alpha, side), when the
    caller has them already (finish() shares them)."""
    guide = working_planes(rgb, side) if rgb_copy is None else rgb_copy
    # The guide is an exact area average: the fitted matte follows its every grey level. The matte's
    # copy is bilinear (band.linear_copy says why).
    coeffs, near = _coefficients(guide, linear_copy(alpha, side) if matte_copy is None else matte_copy, radius, eps)
    out = alpha
    for ys, xs in band_strips(to_full(near, alpha.shape)):
        out = alpha.copy() if out is alpha else out
        _fit_at(out, rgb, coeffs, ys, xs)
    return out


def _fit_at(out: np.ndarray, rgb: np.ndarray, coeffs: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> None:
    """The fitted matte a . I + b at full-size points (ys, xs), written into out. In place, in _dot's
    order: the same values as a new array per step, in two arrays the size of the points."""
    *a, b = sample_columns([coeffs], ys, xs, out.shape)
    at = flat_index(out.shape, ys, xs)
    taken = take(rgb, at)
    pixels = [taken[:, k] for k in range(3)]  # read once each: views, not split copies
    fitted, colour = np.empty_like(b), np.empty_like(b)
    for k, dst in enumerate((fitted, colour, colour)):
        np.multiply(pixels[k], np.float32(1 / 255), out=dst, dtype=np.float32)
        dst *= a[k]
        if k:
            fitted += dst
    fitted += b
    fitted *= np.float32(255)
    fitted += np.float32(0.5)
    put(out, at, np.clip(fitted, 0, 255, out=fitted).astype(np.uint8))


def controls(alpha: np.ndarray, threshold: int = 0, erode: int = 0, feather: int = 0, opaque: int = 0) -> np.ndarray:
    """Alpha below `threshold` to 0 and at or above `opaque` (when not 0) to 255, then the matte shrunk
    by `erode` px, then blurred over `feather` px."""
    if threshold:
        alpha = np.where(alpha < threshold, np.uint8(0), alpha)
    if opaque:
        alpha = np.where(alpha >= opaque, np.uint8(255), alpha)
    if erode:
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode + 1, 2 * erode + 1))
        alpha = cv2.erode(alpha, disc, borderType=cv2.BORDER_REPLICATE)
    if feather:
        alpha = cv2.GaussianBlur(alpha, (2 * feather + 1, 2 * feather + 1), feather / 2)
    return alpha


def with_input_alpha(alpha: np.ndarray, input_alpha: np.ndarray | None) -> np.ndarray:
    """The product of the two mattes: what the input left transparent stays transparent."""
    if input_alpha is None:
        return alpha
    product = alpha.astype(np.uint16) * input_alpha + 127
    return (product // 255).astype(np.uint8)


def finish(
    rgb: np.ndarray,
    alpha: np.ndarray,
    input_alpha: np.ndarray | None,
    options: OutputOptions,
    maps: Distances | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The edge steps the options ask for, in order; returns (rgb, alpha), rgb changed in place.
    `maps`: solid.distances(alpha) when the caller has them (the worker's confidence() needs them
    too): refine takes the matte's copy from them, and solidify its distances when refine is off
    (refine moves the contour they measure)."""
    colour = options.decontaminate and not options.alpha_only
    # One small copy of the photo for both: the guided filter's guide and the colour estimate's input.
    rgb_copy = working_planes(rgb, SIDE) if options.refine or colour else None
    if options.refine:
        alpha = refine(rgb, alpha, rgb_copy=rgb_copy, matte_copy=_copy(maps, rgb_copy))
        # The refined matte's own contour, as before: the raw matte's maps placed solidify's band a
        # pixel off and left more of a see-through interior soft (make bench-quality: 0.210 vs 0.196).
        maps = None
    if options.solidify:  # before the user's controls, which then act on a solid subject
        maps = distances(alpha) if maps is None else maps
        alpha = solidify(alpha, maps=maps)
    controlled = controls(alpha, options.alpha_threshold, options.erode, options.feather, options.opaque_threshold)
    if colour:
        # The colour estimate weighs by the matte before solidify (its maps' copy, already made): make
        # bench-quality scored that better than the solid matte's copy on the see-through composites
        # (colour error 4.11 -> 3.98). The user's controls change the matte itself: then its own copy.
        copy = _copy(maps, rgb_copy) if controlled is alpha else None
        rgb = decontaminate(rgb if writable(rgb) else rgb.copy(), controlled, rgb_copy, copy)
    return rgb, with_input_alpha(controlled, input_alpha)


def _copy(maps: Distances | None, rgb_copy: list[np.ndarray] | None) -> np.ndarray | None:
    """The matte's working copy from distance maps' own (the same bilinear shrink as band.linear_copy),
    where it has the working copy's size."""
    if maps is None or rgb_copy is None or maps.small.shape != rgb_copy[0].shape:
        return None
    return unit_copy(maps.small)
