"""What is drawn behind the subject, pixel by pixel: an uploaded image fitted by cover, or the photo
itself blurred. (A solid colour needs no picture: encoding.encode flattens onto it.)"""

from __future__ import annotations

import cv2
import numpy as np

from .layout import Plan

# The blur runs on a copy shrunk by about sigma / BLUR_STEP (a Gaussian that wide hides the loss), so a
# 12 MP photo blurred by 40 px costs a small blur, not a 241-tap one.
BLUR_STEP = 4


def cover(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`image` scaled to cover width x height, keeping its proportions, its overflow cut evenly."""
    source_h, source_w = image.shape[:2]
    factor = max(width / source_w, height / source_h)
    scaled_w, scaled_h = max(width, round(source_w * factor)), max(height, round(source_h * factor))
    method = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    if (scaled_w, scaled_h) != (source_w, source_h):
        image = cv2.resize(image, (scaled_w, scaled_h), interpolation=method)
    left, top = (scaled_w - width) // 2, (scaled_h - height) // 2
    return np.ascontiguousarray(image[top : top + height, left : left + width])


class Blurred:
    """The photo blurred by `sigma` px, kept small, drawn at any canvas geometry later (the photo itself
    is changed in place by the edge steps, so it is blurred before them)."""

    def __init__(self, rgb: np.ndarray, sigma: int):
        height, width = rgb.shape[:2]
        step = max(1, sigma // BLUR_STEP)
        small_w, small_h = max(1, width // step), max(1, height // step)
        small = rgb if step == 1 else cv2.resize(rgb, (small_w, small_h), interpolation=cv2.INTER_AREA)
        self.ratio = (width / small_w, height / small_h)  # photo px per small px
        self.small = cv2.GaussianBlur(small, (0, 0), sigma / step, borderType=cv2.BORDER_REFLECT_101)

    def draw(self, the_plan: Plan, width: int, height: int) -> np.ndarray:
        """The blurred photo behind a canvas drawn by `the_plan`, then shrunk to width x height; where
        the canvas lies past the photo, the photo is mirrored."""
        zoom_x, zoom_y = width / the_plan.width, height / the_plan.height
        ratio_x, ratio_y = self.ratio
        # canvas px = zoom * (photo px + frame_at); photo px = ratio * small px + (ratio - 1) / 2
        matrix = np.array(
            [
                [zoom_x * ratio_x, 0, zoom_x * ((ratio_x - 1) / 2 + the_plan.frame_at[0])],
                [0, zoom_y * ratio_y, zoom_y * ((ratio_y - 1) / 2 + the_plan.frame_at[1])],
            ],
            np.float64,
        )
        return cv2.warpAffine(
            self.small, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
