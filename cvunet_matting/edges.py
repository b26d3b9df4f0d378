"""The matte's edges at full size: guided refinement, the user's edge controls, the input's own alpha.

The model sees at most 1024 x 1024 pixels, so a 12 MP photo's matte is upscaled about 4x and its edges
go soft. refine() re-fits the matte to the full-size photo with a colour guided filter (He, Sun & Tang,
"Guided Image Filtering", 2013): the coefficients come from the working copy (band.py), and the matte
is recomputed at full size, near the edges only, from the full-size colours.
"""

from __future__ import annotations

import cv2
import numpy as np

from .band import band_points, gather, grow, sample, scatter, to_full, working_copy
from .foreground import decontaminate

RADIUS = 6  # the guided filter's window radius, in working-copy pixels (make bench-quality)
EPS = 1e-4  # its regulariser: smaller follows the photo's edges more closely (and its noise)
_PAIRS = ([0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2])  # the colour covariance's six distinct entries


def _box(image: np.ndarray, radius: int) -> np.ndarray:
    return cv2.boxFilter(image, -1, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)


def _solve(var: np.ndarray, cov: np.ndarray, eps: float) -> np.ndarray:
    """a = (Sigma + eps U)^-1 cov for N symmetric 3x3 systems given by their six entries."""
    sigma = var[:, [0, 1, 2, 1, 3, 4, 2, 4, 5]].reshape(-1, 3, 3)
    sigma += np.float32(eps) * np.eye(3, dtype=np.float32)
    return np.linalg.solve(sigma, cov[..., None])[..., 0]


def _coefficients(guide: np.ndarray, matte: np.ndarray, radius: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """The filter's mean coefficients (H x W x 4: a for r, g, b, then b) and where they are not 0,0,0,p."""
    near = grow(((matte > 0) & (matte < 1)).astype(np.uint8), radius)
    ys, xs = band_points(near)
    mean_guide, mean_matte = _box(guide, radius), _box(matte, radius)
    mean_cross = _box(guide * matte[..., None], radius)
    mean_square = _box(guide[..., _PAIRS[0]] * guide[..., _PAIRS[1]], radius)
    mg, mm = gather(mean_guide, ys, xs), gather(mean_matte, ys, xs)
    cov = gather(mean_cross, ys, xs) - mg * mm[:, None]
    var = gather(mean_square, ys, xs) - mg[:, _PAIRS[0]] * mg[:, _PAIRS[1]]
    a = _solve(var, cov, eps)
    coeffs = np.zeros((*matte.shape, 4), np.float32)
    coeffs[..., 3] = mean_matte  # a = 0, b = the mean away from edges: a flat window stays as it is
    scatter(coeffs, ys, xs, np.concatenate([a, (mm - np.einsum("ij,ij->i", a, mg))[:, None]], axis=1))
    return _box(coeffs, radius), grow(near, radius)


def refine(rgb: np.ndarray, alpha: np.ndarray, radius: int = RADIUS, eps: float = EPS) -> np.ndarray:
    """The matte re-fitted to the full-size photo's edges; pixels far from an edge keep their value."""
    coeffs, near = _coefficients(working_copy(rgb), working_copy(alpha), radius, eps)
    ys, xs = band_points(to_full(near, alpha.shape))
    if not len(ys):
        return alpha
    c = sample(coeffs, ys, xs, alpha.shape)
    colour = gather(rgb, ys, xs).astype(np.float32) * np.float32(1 / 255)
    fitted = np.einsum("ij,ij->i", c[:, :3], colour) + c[:, 3]
    out = alpha.copy()
    scatter(out, ys, xs, np.clip(fitted * 255 + 0.5, 0, 255).astype(np.uint8))
    return out


def controls(alpha: np.ndarray, threshold: int = 0, erode: int = 0, feather: int = 0) -> np.ndarray:
    """Alpha below `threshold` to 0, then the matte shrunk by `erode` px, then blurred over `feather` px."""
    if threshold:
        alpha = np.where(alpha < threshold, np.uint8(0), alpha)
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


def finish(rgb: np.ndarray, alpha: np.ndarray, input_alpha: np.ndarray | None, options) -> tuple:
    """The edge steps the options ask for, in order; returns (rgb, alpha), rgb changed in place."""
    if options.refine:
        alpha = refine(rgb, alpha)
    alpha = controls(alpha, options.alpha_threshold, options.erode, options.feather)
    if options.decontaminate and not options.alpha_only:
        rgb = decontaminate(rgb if rgb.flags.writeable else rgb.copy(), alpha)
    return rgb, with_input_alpha(alpha, input_alpha)
