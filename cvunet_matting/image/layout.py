"""The output canvas: the subject found in the final alpha, cropped with a margin, scaled and placed,
then the whole shrunk to the size asked for.

Order: the canvas is the photo's frame, or with `crop` the subject's bounding box plus its margin
(past the photo's border, transparent); `scale` resizes the subject's box to that share of the canvas
and `position` places it (then only the box is kept: what lay outside it, specks included, is not
drawn); `size` shrinks the result last. The backdrop (backdrop.py) follows the same geometry, so the
blurred photo stays aligned behind the subject.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cvunet_matting.errors import ErrorCode, InputError

from . import canvas_options as canvas
from .encoding import OutputOptions

VISIBLE = 10  # alpha at or above this (4%) is part of the subject's box; fainter haze is not
SPECK_SHARE = 0.0002  # connected parts smaller than this share of the photo (0.02%) are specks...
MIN_SPECK_PX = 16  # ...or than this many pixels
WORK_PIXELS = 1_000_000  # the parts are told apart on a copy of about this size (subject_box)
EMPTY_SUBJECT = "no subject found to crop to: the matte is empty (or holds only specks)"

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 excluded)


@dataclass(frozen=True)
class Plan:
    """Where everything goes on a canvas of `width` x `height` (before `size`), in canvas px."""

    width: int
    height: int
    frame_at: tuple[int, int]  # where the photo's top-left pixel lies (the backdrop's anchor)
    subject: Box | None = None  # the subject's box in the photo, when it is moved on its own...
    dest: Box | None = None  # ...and where it goes: else the canvas is a window onto the frame


def subject_box(alpha: np.ndarray) -> Box | None:
    """The bounding box of the alpha's visible parts, specks left out; None when nothing is left.

    The parts are told apart on a copy of at most about WORK_PIXELS (each pixel: whether any pixel of
    its block is visible), a tenth of the work at 12 MP; the box is then made exact at full size."""
    visible = cv2.threshold(alpha, VISIBLE - 1, 255, cv2.THRESH_BINARY)[1]
    step = max(1, int((alpha.size / WORK_PIXELS) ** 0.5))
    blocks = _any_in_blocks(visible, step)
    count, _, stats, _ = cv2.connectedComponentsWithStats(blocks, connectivity=8)
    least = max(MIN_SPECK_PX, SPECK_SHARE * alpha.size) / step**2
    kept = stats[1:count][stats[1:count, cv2.CC_STAT_AREA] >= least]  # row 0 is the background
    if not len(kept):
        return None
    x0, y0 = kept[:, cv2.CC_STAT_LEFT].min() * step, kept[:, cv2.CC_STAT_TOP].min() * step
    x1 = (kept[:, cv2.CC_STAT_LEFT] + kept[:, cv2.CC_STAT_WIDTH]).max() * step
    y1 = (kept[:, cv2.CC_STAT_TOP] + kept[:, cv2.CC_STAT_HEIGHT]).max() * step
    window = visible[y0:y1, x0:x1]  # the blocks' box: exact to the pixel within it
    rows = np.flatnonzero(cv2.reduce(window, 1, cv2.REDUCE_MAX))
    columns = np.flatnonzero(cv2.reduce(window, 0, cv2.REDUCE_MAX))
    return int(x0 + columns[0]), int(y0 + rows[0]), int(x0 + columns[-1] + 1), int(y0 + rows[-1] + 1)


def _any_in_blocks(mask: np.ndarray, step: int) -> np.ndarray:
    """Non-zero where any pixel of a step x step block of `mask` (0 or 255) is, the last blocks padded
    with 0. An area average: one 255 among step² pixels stays at least 1 up to step 16 (a 256 MP
    photo; CVUNET_MAX_PIXELS is far below)."""
    if step == 1:
        return mask
    height, width = mask.shape
    padded = cv2.copyMakeBorder(mask, 0, -height % step, 0, -width % step, cv2.BORDER_CONSTANT, value=0)
    size = (padded.shape[1] // step, padded.shape[0] // step)
    return cv2.resize(padded, size, interpolation=cv2.INTER_AREA)


def plan(alpha: np.ndarray, options: OutputOptions) -> Plan:
    """The canvas the options ask for; InputError `empty_subject` for a crop with no subject."""
    height, width = alpha.shape
    scale, where = canvas.scale_of(options.scale), canvas.position_of(options.position or canvas.ORIGINAL)
    moved = scale is not None or where is not None
    box = subject_box(alpha) if options.crop or moved else None
    if box is None:
        if options.crop:
            raise InputError(EMPTY_SUBJECT, code=ErrorCode.EMPTY_SUBJECT)
        return Plan(width, height, (0, 0))  # nothing to move: the frame as it is
    x0, y0, x1, y1 = box
    frame_at = (0, 0)
    if options.crop:
        top, right, bottom, left = canvas.margin_of(options.crop_margin, (x1 - x0, y1 - y0))
        width, height, frame_at = x1 - x0 + left + right, y1 - y0 + top + bottom, (left - x0, top - y0)
    if not moved:
        return Plan(width, height, frame_at)
    return Plan(width, height, frame_at, box, _dest(box, (width, height), frame_at, scale, where))


def _dest(box: Box, size: tuple[int, int], frame_at: tuple[int, int], scale, where) -> Box:
    x0, y0, x1, y1 = box
    box_w, box_h = x1 - x0, y1 - y0
    width, height = size
    factor = 1.0 if scale is None else scale * min(width / box_w, height / box_h)
    dest_w, dest_h = max(1, round(box_w * factor)), max(1, round(box_h * factor))
    if where is None:  # 'original': the box keeps its centre where it was on the canvas
        centre_x, centre_y = frame_at[0] + (x0 + x1) / 2, frame_at[1] + (y0 + y1) / 2
        left, top = round(centre_x - dest_w / 2), round(centre_y - dest_h / 2)
    else:
        left, top = round(where[0] * (width - dest_w)), round(where[1] * (height - dest_h))
    return left, top, left + dest_w, top + dest_h


def draw(rgb: np.ndarray, alpha: np.ndarray, the_plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    """The canvas's rgb and alpha: a window onto the frame, or the subject's box moved into place."""
    out_rgb = np.zeros((the_plan.height, the_plan.width, 3), np.uint8)
    out_alpha = np.zeros((the_plan.height, the_plan.width), np.uint8)
    if the_plan.subject is None or the_plan.dest is None:
        _paste(out_rgb, out_alpha, rgb, alpha, the_plan.frame_at)
        return out_rgb, out_alpha
    x0, y0, x1, y1 = the_plan.subject
    part_rgb, part_alpha = rgb[y0:y1, x0:x1], alpha[y0:y1, x0:x1]
    left, top, right, bottom = the_plan.dest
    if (right - left, bottom - top) != (x1 - x0, y1 - y0):
        method = cv2.INTER_AREA if right - left < x1 - x0 else cv2.INTER_LINEAR
        part_rgb, part_alpha = resize(part_rgb, part_alpha, (right - left, bottom - top), method)
    _paste(out_rgb, out_alpha, part_rgb, part_alpha, (left, top))
    return out_rgb, out_alpha


def _paste(out_rgb, out_alpha, rgb, alpha, at: tuple[int, int]) -> None:
    """`rgb`/`alpha` copied onto the canvas with their top-left at `at`, clipped to the canvas."""
    left, top = at
    height, width = alpha.shape
    cx0, cy0 = max(0, left), max(0, top)
    cx1, cy1 = min(out_alpha.shape[1], left + width), min(out_alpha.shape[0], top + height)
    if cx1 <= cx0 or cy1 <= cy0:
        return
    out_rgb[cy0:cy1, cx0:cx1] = rgb[cy0 - top : cy1 - top, cx0 - left : cx1 - left]
    out_alpha[cy0:cy1, cx0:cx1] = alpha[cy0 - top : cy1 - top, cx0 - left : cx1 - left]


def shrink(rgb: np.ndarray, alpha: np.ndarray, size: str) -> tuple[np.ndarray, np.ndarray]:
    """The canvas shrunk to `size` (canonical, canvas_options.parse_size); as it is when it fits."""
    height, width = alpha.shape
    target = canvas.size_of(size, width, height)
    if target == (width, height):
        return rgb, alpha
    return resize(rgb, alpha, target, cv2.INTER_AREA)


def resize(rgb: np.ndarray, alpha: np.ndarray, size: tuple[int, int], method: int) -> tuple[np.ndarray, np.ndarray]:
    """Both resized with the colours weighted by their alpha (premultiplied, in 8 bits as compositors
    keep them), so that the clear pixels around the subject, whatever colour they hold, do not bleed
    into its edge."""
    premultiplied = cv2.multiply(rgb, cv2.merge([alpha] * 3), scale=1 / 255)
    premultiplied = cv2.resize(premultiplied, size, interpolation=method)
    new_alpha = cv2.resize(alpha, size, interpolation=method)
    return cv2.divide(premultiplied, cv2.merge([new_alpha] * 3), scale=255), new_alpha  # x / 0 is 0
