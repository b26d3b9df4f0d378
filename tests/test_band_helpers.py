"""band.py's shortcuts give OpenCV's and numpy's very bytes: the nearest-neighbour enlargement of a
mask (to_full) and the taking of 3-byte pixels (take). They replace cv2 and numpy calls for speed only
(issue #29, item 1): the cut-outs must not move by a bit. And the matte's copy a caller shares is the
one the steps would make."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cvunet_matting.image.band import linear_copy, take, to_full, unit_copy, working_planes
from cvunet_matting.image.foreground import SIDE
from cvunet_matting.image.solid import distances

RNG = np.random.default_rng(29)


@pytest.mark.parametrize("shape", [(1200, 1600), (480, 640), (3000, 4000), (300, 200), (1, 2000)])
def test_a_mattes_linear_copy_is_the_distance_maps_copy(shape):
    """finish() hands refine and the colour estimate the distance maps' copy of the matte instead of
    making one: the two must be the same copy, at the same size as the photo's."""
    matte = RNG.integers(0, 256, shape, dtype=np.uint8)
    maps = distances(matte, SIDE)
    assert np.array_equal(linear_copy(matte, SIDE), unit_copy(maps.small))
    assert maps.small.shape == working_planes(np.zeros((*shape, 3), np.uint8), SIDE)[0].shape


def test_to_full_is_opencvs_nearest_enlargement():
    for _ in range(200):
        small = tuple(int(v) for v in RNG.integers(1, 300, 2))
        full = tuple(int(v) * RNG.integers(1, 9) if RNG.random() < 0.3 else int(v) for v in RNG.integers(1, 2000, 2))
        full = (max(full[0], 1), max(full[1], 1))
        mask = (RNG.random(small) > 0.5).astype(np.uint8)
        expected = cv2.resize(mask, (full[1], full[0]), interpolation=cv2.INTER_NEAREST)
        assert np.array_equal(to_full(mask, full), expected), (small, full)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_take_is_fancy_indexing_for_every_pixel_width(channels):
    shape = (37, 53) if channels == 1 else (37, 53, channels)
    image = RNG.integers(0, 256, shape, dtype=np.uint8)
    ys, xs = RNG.integers(0, 37, 500), RNG.integers(0, 53, 500)
    taken = take(image, ys * 53 + xs)
    assert np.array_equal(taken, image[ys, xs])
    assert take(image, np.empty(0, np.intp)).shape == ((0,) if channels == 1 else (0, channels))
