"""Solid subjects (solid.py): the interior made opaque, the far background clear, the edge band kept."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cvunet_matting.image.edges import finish
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.image.solid import band_px, solidify


def see_through_disc(height: int, width: int, radius: int, coat: int = 180, haze: int = 30) -> tuple:
    """A subject the model was unsure of: a disc at `coat` inside, a soft 6 px rim, faint `haze` around."""
    distance = np.hypot(*np.mgrid[:height, :width] - np.array([height / 2, width / 2])[:, None, None])
    rim = np.clip((radius - distance) / 6 + 0.5, 0, 1)  # 0 outside, 1 inside, a ramp across the outline
    return np.uint8(haze + rim * (coat - haze) + 0.5), distance


def test_the_band_scales_with_the_image_and_has_a_floor():
    assert band_px((300, 451)) == pytest.approx(6.765)
    assert band_px((3000, 4000, 3)) == pytest.approx(60)
    assert band_px((20, 30)) == 2.0  # a thumbnail still keeps a soft outline


@pytest.mark.parametrize("size", [(300, 451), (1500, 2000)])  # the second goes through the small copy
def test_the_interior_becomes_opaque_the_far_background_clear_and_the_rim_stays(size):
    height, width = size
    radius = height // 3
    alpha, distance = see_through_disc(height, width, radius)
    out = solidify(alpha)
    band = band_px(alpha.shape)
    reach = 2 * band + 2 * max(1, width / 512)  # the ramp's end, blurred by a pixel of the small copy
    inner, outer = distance < radius - reach, distance > radius + reach
    assert (out[inner] == 255).all() and (out[outer] == 0).all()
    rim = np.abs(distance - radius) < band - 2  # the soft edge, within the band: as it was
    assert (out[rim] == alpha[rim]).all()
    assert 0 < np.count_nonzero((out > 0) & (out < 255)) < np.count_nonzero((alpha > 0) & (alpha < 255)) / 4


def test_the_ramp_beyond_the_band_has_no_seam():
    alpha, distance = see_through_disc(1000, 1000, 300)
    out = solidify(alpha).astype(int)
    start = 500 - 300 + int(band_px(alpha.shape))
    row = out[500, start:500]  # from the band's end to the centre, along one radius
    assert np.all(np.diff(row) >= 0) and row[0] == alpha[500, start] and row[-1] == 255
    assert len(set(row.tolist())) > 3  # raised over a ramp, not in one step


def test_hair_near_the_outline_is_kept():
    alpha, _ = see_through_disc(800, 800, 250, coat=255, haze=0)  # a band of 12 px
    strands = np.zeros_like(alpha)
    for angle in np.linspace(0, np.pi, 12):  # thin strands at 0.35, 3-7 px outside the outline
        x, y = 400 + 253 * np.cos(angle), 400 - 253 * np.sin(angle)
        cv2.line(strands, (int(x), int(y)), (int(x + 4 * np.cos(angle)), int(y - 4 * np.sin(angle))), 90, 1)
    hairy = np.maximum(alpha, strands)
    out = solidify(hairy)
    assert (out[strands > 0] == hairy[strands > 0]).all()


def test_a_subject_cut_by_the_frame_stays_solid_up_to_it():
    alpha = np.zeros((200, 300), np.uint8)
    alpha[60:, 50:250] = 170  # the body runs out of the bottom of the frame
    out = solidify(alpha)
    assert (out[120:, 80:220] == 255).all()  # the bottom rows included: the frame's border is no outline


@pytest.mark.parametrize("level", [0, 60, 127])
def test_a_matte_with_no_subject_is_cleared(level):
    assert (solidify(np.full((50, 80), level, np.uint8)) == 0).all()


@pytest.mark.parametrize("level", [128, 200, 255])
def test_a_matte_that_is_all_subject_is_made_opaque(level):
    assert (solidify(np.full((50, 80), level, np.uint8)) == 255).all()


def test_finish_solidifies_by_default_and_not_when_switched_off():
    alpha, distance = see_through_disc(300, 300, 100)
    rgb = np.full((300, 300, 3), 128, np.uint8)
    on = finish(rgb.copy(), alpha, None, OutputOptions(refine=False, decontaminate=False))[1]
    off = finish(rgb.copy(), alpha, None, OutputOptions(refine=False, decontaminate=False, solidify=False))[1]
    assert (off == alpha).all()
    assert (on[distance < 50] == 255).all() and (on[distance > 150] == 0).all()
