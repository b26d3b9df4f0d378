"""The matte's edges at full size: guided refinement, the user's edge controls, the input's own alpha.

The model sees at most 1024 x 1024 pixels, so a 12 MP photo's matte is upscaled about 4x and its edges
go soft. refine() re-fits the matte to the full-size photo with a colour guided filter (He, Sun & Tang,
"Guided Image Filtering", 2013; the fast variant, 2015): the coefficients come from a small copy
(band.py), and the matte is recomputed at full size, near the edges only, from the full-size colours.
"""

from __future__ import annotations

import cv2
import numpy as np

from cvunet_matting.image.encoding import OutputOptions

from .band import EDGE_HIGH, EDGE_LOW, band_points, gather, grow, sample, scatter, to_full, working_copy
from .foreground import decontaminate
from .solid import solidify

# The coefficients come from a copy at most SIDE pixels on its long side, in windows of RADIUS around
# each pixel (make bench-quality: 512 and 3 scored better than 1024 and 6, at a quarter of the cost;
# wider windows scored better still on its composites, whose colours differ more than real photos').
SIDE, RADIUS = 512, 3
EPS = 1e-4  # the regulariser: smaller follows the photo's edges more closely, and its noise too
_PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))  # the colour covariance's six distinct entries


def _box(image: np.ndarray, radius: int) -> np.ndarray:
    return cv2.boxFilter(image, -1, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)


def _solve(var: list[np.ndarray], cov: np.ndarray, eps: float | np.floating) -> np.ndarray:
    """a = (Sigma + eps U)^-1 cov for N symmetric 3x3 systems (six entries each), by cofactors."""
    rr, rg, rb, gg, gb, bb = var
    rr, gg, bb = rr + eps, gg + eps, bb + eps
    inverse = [gg * bb - gb * gb, rb * gb - rg * bb, rg * gb - rb * gg]  # the first row, then the rest
    inverse += [inverse[1], rr * bb - rb * rb, rg * rb - rr * gb]
    inverse += [inverse[2], inverse[5], rr * gg - rg * rg]
    det = rr * inverse[0] + rg * inverse[1] + rb * inverse[2]
    a = np.stack([sum(inverse[3 * row + k] * cov[:, k] for k in range(3)) for row in range(3)], axis=1)
    return a / det[:, None]


def _coefficients(guide: np.ndarray, matte: np.ndarray, radius: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """The filter's mean coefficients (H x W x 4: a for r, g, b, then b) and where they are not 0,0,0,p."""
    near = grow(((matte >= EDGE_LOW / 255) & (matte <= EDGE_HIGH / 255)).view(np.uint8), radius)
    ys, xs = band_points(near)
    channels = cv2.split(guide)

    def mean_at(image: np.ndarray) -> np.ndarray:
        return gather(_box(image, radius), ys, xs)

    mean_matte = _box(matte, radius)
    mg, mm = np.stack([mean_at(c) for c in channels], axis=1), gather(mean_matte, ys, xs)
    cov = np.stack([mean_at(cv2.multiply(c, matte)) for c in channels], axis=1) - mg * mm[:, None]
    var = [mean_at(cv2.multiply(channels[i], channels[j])) - mg[:, i] * mg[:, j] for i, j in _PAIRS]
    a = _solve(var, cov, np.float32(eps))
    coeffs = np.zeros((*matte.shape, 4), np.float32)
    coeffs[..., 3] = mean_matte  # a = 0, b = the mean away from edges: a flat window stays as it is
    scatter(coeffs, ys, xs, np.concatenate([a, (mm - np.einsum("ij,ij->i", a, mg))[:, None]], axis=1))
    return _box(coeffs, radius), grow(near, radius)


def refine(rgb: np.ndarray, alpha: np.ndarray, radius: int = RADIUS, eps: float = EPS, side: int = SIDE) -> np.ndarray:
    """The matte re-fitted to the full-size photo's edges; pixels far from an edge keep their value."""
    coeffs, near = _coefficients(working_copy(rgb, side), working_copy(alpha, side), radius, eps)
    ys, xs = band_points(to_full(near, alpha.shape))
    if not len(ys):
        return alpha
    c = sample(coeffs, ys, xs, alpha.shape)
    colour = gather(rgb, ys, xs).astype(np.float32) * np.float32(1 / 255)
    fitted = np.einsum("ij,ij->i", c[:, :3], colour) + c[:, 3]
    out = alpha.copy()
    scatter(out, ys, xs, np.clip(fitted * 255 + 0.5, 0, 255).astype(np.uint8))
    return out


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
    rgb: np.ndarray, alpha: np.ndarray, input_alpha: np.ndarray | None, options: OutputOptions
) -> tuple[np.ndarray, np.ndarray]:
    """The edge steps the options ask for, in order; returns (rgb, alpha), rgb changed in place."""
    if options.refine:
        alpha = refine(rgb, alpha)
    if options.solidify:  # before the user's controls, which then act on a solid subject
        alpha = solidify(alpha)
    alpha = controls(alpha, options.alpha_threshold, options.erode, options.feather, options.opaque_threshold)
    if options.decontaminate and not options.alpha_only:
        rgb = decontaminate(rgb if rgb.flags.writeable else rgb.copy(), alpha)
    return rgb, with_input_alpha(alpha, input_alpha)
