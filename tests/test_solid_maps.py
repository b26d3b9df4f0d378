"""solid.Distances: the small copy's distance maps are made only when read, and beyond_band(), which
the confidence score reads instead of them, is the pixels farther than the band from the contour
(issue #29, item 1: two distance transforms fewer per image by default)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cvunet_matting.image.confidence import confidence
from cvunet_matting.image.solid import distances

RNG = np.random.default_rng(29)


def blob_matte(shape: tuple[int, int] = (1200, 1600)) -> np.ndarray:
    """A subject with a ragged outline, a soft edge and a see-through patch, like a model's matte."""
    noise = cv2.resize(RNG.random((12, 16), dtype=np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    matte = cv2.GaussianBlur(np.uint8(noise > 0.5) * np.uint8(255), (0, 0), 3)
    matte[shape[0] // 3 : shape[0] // 2, shape[1] // 3 : shape[1] // 2] //= 2
    return matte


def exact_beyond(inside: np.ndarray, band: float) -> np.ndarray:
    """By brute force: no pixel of the other side within `band` (Euclidean), the frame no contour."""
    beyond = np.ones(inside.shape, bool)
    for side in (True, False):
        oy, ox = np.nonzero(inside != side)
        for y, x in zip(*np.nonzero(inside == side), strict=True):
            beyond[y, x] = not len(oy) or np.min((oy - y) ** 2 + (ox - x) ** 2) > band * band
    return beyond


@pytest.mark.parametrize("band", [2.0, 3.5, 7.68])
def test_beyond_band_is_the_exact_euclidean_test(band):
    matte = np.zeros((40, 56), np.uint8)
    matte[8:30, 10:44] = 255
    matte[14:18, 20:24] = 90  # a hole: a contour inside the subject too
    matte[30:36, 30:32] = 200  # a thin spur
    matte[:, :3] = 255  # the subject cut by the frame: its border is no contour
    maps = distances(matte)
    maps.band = band
    assert np.array_equal(maps.beyond_band(), exact_beyond(matte >= 128, band))


def test_beyond_band_agrees_with_the_distance_maps_on_a_photo_sized_matte():
    """The transforms' 5x5 chamfer distances are within 2% of exact ones: the two tests differ only
    at the band's own edge."""
    maps = distances(blob_matte())
    by_maps = (maps.inner > maps.band) | (maps.outer > maps.band)
    differ = np.count_nonzero(by_maps != maps.beyond_band())
    assert np.count_nonzero(by_maps) > 0 and differ / by_maps.size < 0.005


def test_the_confidence_score_runs_no_distance_transform():
    matte = blob_matte()
    maps = distances(matte)
    score = confidence(matte, maps)
    assert 0.5 < score < 1.0  # the see-through patch is doubt
    assert "inner" not in vars(maps) and "outer" not in vars(maps)
    assert maps.inner.shape == maps.small.shape and "inner" in vars(maps)  # made when read, then kept


@pytest.mark.parametrize("level", [0, 255])
def test_a_frame_with_one_side_only_is_beyond_the_band_everywhere(level):
    maps = distances(np.full((30, 40), level, np.uint8))
    assert maps.beyond_band().all()
