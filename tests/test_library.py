"""The Python API, `from cvunet_matting import remove`, as rembg's: the same kind of image out as in,
rembg's keyword arguments and our edge controls, a session to reuse; nothing heavy on import."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from cvunet_matting.errors import InputError
from tests import support

SIZE = (40, 56)  # rows, columns


@pytest.fixture(scope="module")
def session(tiny_model):
    from cvunet_matting import new_session

    return new_session()


def photo() -> np.ndarray:
    """A bright disc on a dark ground, in RGB: the tiny model's alpha is the brightness."""
    rgb = np.full((*SIZE, 3), 20, np.uint8)
    cv2.circle(rgb, (28, 20), 12, (235, 235, 235), -1)
    return rgb


def test_bytes_in_png_bytes_out_pil_in_pil_out_array_in_array_out(session):
    from cvunet_matting import remove

    rgb = photo()
    png = cv2.imencode(".png", rgb[..., ::-1])[1].tobytes()
    out = remove(png, session=session)
    assert isinstance(out, bytes) and out.startswith(b"\x89PNG")
    assert cv2.imdecode(np.frombuffer(out, np.uint8), cv2.IMREAD_UNCHANGED).shape == (*SIZE, 4)

    image = remove(Image.fromarray(rgb), session=session)
    assert isinstance(image, Image.Image) and image.mode == "RGBA" and image.size == (SIZE[1], SIZE[0])
    array = remove(rgb, session=session)
    assert isinstance(array, np.ndarray) and array.shape == (*SIZE, 4)
    assert array[20, 28, 3] > 200 and array[2, 2, 3] < 50  # the disc kept, the ground cleared
    assert np.array_equal(array, np.asarray(image))  # one path, whatever the container
    assert isinstance(remove(rgb, session=session, force_return_bytes=True), bytes)


def test_rembgs_arguments_and_our_edge_controls(session):
    from cvunet_matting import remove

    rgb = photo()
    mask = remove(Image.fromarray(rgb), session=session, only_mask=True)
    assert mask.mode == "L" and mask.size == (SIZE[1], SIZE[0])
    flat = remove(rgb, session=session, bgcolor=(0, 0, 255, 255))
    assert flat.shape == (*SIZE, 4) and (flat[..., 3] == 255).all() and flat[2, 2, 2] > 200  # blue ground
    with pytest.raises(ValueError, match="opaque"):
        remove(rgb, session=session, bgcolor=(0, 0, 255, 128))
    # The tiny model's alpha is the brightness, 20 and 235 here: rembg's thresholds make them 0 and 255.
    soft = remove(rgb, session=session, solidify=False, refine=False)
    hard = remove(
        rgb,
        session=session,
        solidify=False,
        refine=False,
        alpha_matting=True,
        alpha_matting_foreground_threshold=200,
        alpha_matting_background_threshold=30,
    )
    assert set(np.unique(soft[..., 3])) == {20, 235} and set(np.unique(hard[..., 3])) == {0, 255}
    eroded = remove(rgb, session=session, erode=4)
    assert (eroded[..., 3] > 128).sum() < (remove(rgb, session=session)[..., 3] > 128).sum()
    with pytest.raises(InputError):
        remove(rgb, session=session, feather=1000)
    with pytest.raises(TypeError):
        remove(rgb, session=session, no_such_control=1)


def test_rembg_model_names_and_a_refusal_of_the_special_ones(tiny_model):
    from cvunet_matting import new_session

    assert new_session("u2net").version and new_session("isnet-general-use").version
    with pytest.raises(ValueError, match="one general model"):
        new_session("u2net_human_seg")


def test_importing_the_package_loads_neither_numpy_nor_the_model():
    code = (
        "import sys, cvunet_matting; "
        "print(sorted(m for m in ('numpy', 'PIL', 'onnxruntime', 'cvunet_matting.library') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=support.REPO)
    assert loaded.stdout.strip() == "[]"


def test_the_output_controls_are_drawn_whatever_the_container(session):
    from cvunet_matting import remove

    rgb = photo()
    png = cv2.imencode(".png", rgb[..., ::-1])[1].tobytes()
    cropped = remove(rgb, session=session, crop=True)
    assert 20 <= cropped.shape[0] <= 36 and 20 <= cropped.shape[1] <= 36  # about the disc (25 px), not 56 x 40
    from_bytes = cv2.imdecode(np.frombuffer(remove(png, session=session, crop=True), np.uint8), cv2.IMREAD_UNCHANGED)
    assert from_bytes.shape == cropped.shape
    blue = cv2.imencode(".png", np.full((8, 8, 3), (255, 0, 0), np.uint8))[1].tobytes()  # BGR: blue
    backed = remove(Image.fromarray(rgb), session=session, bg_image=blue)
    assert backed.getpixel((1, 1))[2] > 200 and backed.getpixel((1, 1))[3] == 255
