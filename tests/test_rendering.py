"""A finished cut-out rendered again from its kept raw matte (image/rendering.py): the worker's own bytes."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from cvunet_matting.config import load_settings
from cvunet_matting.errors import InputError
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.image.matting import matte_bytes
from cvunet_matting.image.rendering import raw_matte_png, read_raw_matte, render
from cvunet_matting.model.session import MattingSession, resolve_model
from cvunet_matting.storage.files import raw_matte_path
from tests import support

OPTIONS = [
    OutputOptions(),
    OutputOptions(refine=False, decontaminate=False, solidify=False),
    OutputOptions.parse("webp", "#336699", alpha_threshold="64", opaque_threshold="150"),
    OutputOptions.parse("jpg", erode="2", feather="3"),
    OutputOptions(alpha_only=True, feather=2),
    OutputOptions.parse("png", "red", solidify="false", erode="1"),
    # the canvas (crop, size, scale, position) and the blurred photo behind it
    OutputOptions.parse(crop="true", crop_margin="10% 3px"),
    OutputOptions.parse("webp", size="64px", scale="60%", position="100% 0%"),
    OutputOptions.parse("jpg", bg_blur="6", crop="true", crop_margin="50%"),
    OutputOptions.parse(alpha_only="true", crop="true", size="preview"),
]


@pytest.fixture(scope="module")
def tiny(tiny_model):
    """The tiny CV-UNet-shaped model (its alpha is the brightness) and its settings."""
    settings = load_settings({"CVUNET_MODEL": str(tiny_model)})
    return MattingSession(*resolve_model(settings), settings), settings


def photo() -> np.ndarray:
    """A bright disc on a dark ground, with noise: edges for every step to act on."""
    rgb = np.full((90, 120, 3), 30, np.uint8)
    cv2.circle(rgb, (60, 45), 30, (235, 230, 220), -1)
    return cv2.add(rgb, support.noise((90, 120, 3), 4) // 8)


def as_png(pixels: np.ndarray, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, "PNG")
    return buffer.getvalue()


def inputs() -> list[bytes]:
    rgb = photo()
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:20, :30, 3] = 0  # the input's own transparency multiplies every render too
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return [as_png(rgb, "RGB"), as_png(rgba, "RGBA"), jpeg.tobytes()]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: o.key())
def test_a_render_from_the_raw_matte_is_the_workers_result_byte_for_byte(tiny, options):
    session, settings = tiny
    for data in inputs():
        made = matte_bytes(data, options, session, settings, keep_raw=True)
        assert made.raw_matte is not None
        again = render(data, made.raw_matte, options, settings.max_pixels, settings.encode_threads)
        assert again.data == made.data and (again.width, again.height) == (made.width, made.height)


def test_other_options_from_the_same_matte_give_what_the_model_would_have(tiny):
    session, settings = tiny
    data = inputs()[1]
    raw = matte_bytes(data, OutputOptions(), session, settings, keep_raw=True).raw_matte
    assert raw is not None
    for options in OPTIONS[1:]:
        fresh = matte_bytes(data, options, session, settings).data
        assert render(data, raw, options, settings.max_pixels).data == fresh, options.key()
        assert fresh != matte_bytes(data, OutputOptions(), session, settings).data  # the options do differ


def test_the_raw_matte_is_the_models_alpha_losslessly_and_only_when_asked(tiny):
    session, settings = tiny
    data = inputs()[0]
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    alpha = session.predict_alpha(rgb)
    made = matte_bytes(data, OutputOptions(), session, settings, keep_raw=True)
    assert made.raw_matte is not None and np.array_equal(read_raw_matte(made.raw_matte, alpha.shape), alpha)
    assert matte_bytes(data, OutputOptions(), session, settings).raw_matte is None  # the CLI pays nothing


def test_a_matte_that_does_not_fit_the_input_is_refused_not_drawn():
    matte = raw_matte_png(np.full((10, 12), 200, np.uint8))
    assert read_raw_matte(matte, (10, 12, 3)).shape == (10, 12)
    for bad in (b"", b"not a png", matte):
        with pytest.raises(InputError) as info:
            read_raw_matte(bad, (11, 12, 3))
        assert info.value.code == "no_matte"
    rgb_matte = cv2.imencode(".png", np.zeros((10, 12, 3), np.uint8))[1].tobytes()
    with pytest.raises(InputError):
        read_raw_matte(rgb_matte, (10, 12, 3))


def test_a_large_matte_survives_its_strips(tiny):
    """Several PNG strips (threads) on the worker, one on the web: the pixels are the same."""
    alpha = cv2.resize(support.noise((40, 60), 9), (3000, 2000), interpolation=cv2.INTER_LINEAR)
    for threads in (1, 4):
        assert np.array_equal(read_raw_matte(raw_matte_png(alpha, threads), (2000, 3000)), alpha)


def test_a_run_no_longer_wanted_removes_its_raw_matte_with_its_result(tmp_path, monkeypatch):
    from cvunet_matting.worker import image_job

    result = tmp_path / "x.png"
    result.write_bytes(b"the cut-out")
    raw_matte_path(result).write_bytes(b"its raw matte")
    monkeypatch.setattr(image_job, "still_wanted", lambda task_id: False)  # deleted while it ran
    with pytest.raises(image_job.NoLongerWanted):
        image_job.keep_only_if_wanted(image_job.Job("t", "k", {}, "x.png"), result)
    assert list(tmp_path.iterdir()) == []


def test_a_render_over_a_background_image_is_the_workers_result_byte_for_byte(tiny):
    session, settings = tiny
    behind = as_png(np.dstack([support.noise((40, 70), 1)] * 3), "RGB")
    for options in (
        OutputOptions.parse(background=behind),
        OutputOptions.parse("jpg", background=behind, crop="true", crop_margin="20px", size="48"),
    ):
        for data in inputs():
            made = matte_bytes(data, options, session, settings, keep_raw=True, background=behind)
            assert made.raw_matte is not None
            again = render(data, made.raw_matte, options, settings.max_pixels, background=behind)
            assert again.data == made.data and (again.width, again.height) == (made.width, made.height)
            assert made.data != matte_bytes(data, OutputOptions(), session, settings).data
