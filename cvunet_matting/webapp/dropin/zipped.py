"""remove.bg's `format=zip`: the colour image as a JPEG and the alpha matte as a grey PNG, in one ZIP
(`color.jpg`, `alpha.png`), cut from the task's RGBA PNG: smaller than a PNG with alpha for a photo."""

from __future__ import annotations

import io
import zipfile

import cv2
import numpy as np

from cvunet_matting.image.encoding import parse_color

JPEG_QUALITY = 95


def color_and_alpha(rgba_png: bytes, bg_color: str | None = None) -> bytes:
    """The ZIP from an RGBA PNG result; with `bg_color`, the colour image is flattened on it."""
    pixels = cv2.imdecode(np.frombuffer(rgba_png, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.ndim != 3 or pixels.shape[2] != 4:
        raise ValueError("the result is not an RGBA PNG")
    bgr, alpha = pixels[..., :3], pixels[..., 3]
    color = parse_color(bg_color)
    if color is not None:
        a = alpha[..., None].astype(np.uint16)
        backdrop = np.array(color[::-1], np.uint16)  # OpenCV's BGR order
        bgr = ((bgr * a + backdrop * (255 - a) + 127) // 255).astype(np.uint8)
    ok_jpg, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    ok_png, png = cv2.imencode(".png", alpha)
    if not (ok_jpg and ok_png):
        raise RuntimeError("OpenCV could not encode the ZIP's images")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # both are compressed already
        archive.writestr("color.jpg", jpg.tobytes())
        archive.writestr("alpha.png", png.tobytes())
    return buffer.getvalue()
