"""Property tests: whatever bytes or options arrive, the answer is an image or an InputError."""

from __future__ import annotations

import io
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cvunet_matting.errors import InputError
from cvunet_matting.imaging import OutputOptions, decode, encode

FAST = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "80")), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def valid(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


SAMPLES = {fmt: valid(fmt) for fmt in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")}


def image_or_input_error(data: bytes) -> None:
    try:
        rgb = decode(data, 10_000_000)
    except InputError as exc:
        assert exc.code and str(exc)
        return
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8


@FAST
@given(st.binary(max_size=4096))
def test_arbitrary_bytes(data):
    image_or_input_error(data)


@FAST
@given(st.sampled_from(sorted(SAMPLES)), st.integers(min_value=0), st.binary(max_size=16))
def test_cut_or_corrupted_valid_files(fmt, cut, noise):
    data = SAMPLES[fmt]
    cut %= len(data)
    image_or_input_error(data[:cut])
    image_or_input_error(data[:cut] + noise + data[cut + len(noise) :])


@FAST
@given(st.one_of(st.none(), st.text(max_size=12)), st.one_of(st.none(), st.text(max_size=20)), st.text(max_size=6))
def test_arbitrary_options(fmt, colour, alpha):
    try:
        options = OutputOptions.parse(fmt, colour, alpha)
    except InputError as exc:
        assert exc.code == "bad_option"
        return
    assert options.format in {"png", "webp", "jpg"}
    assert OutputOptions.from_dict(options.to_dict()) == options


@FAST
@given(st.integers(1, 64), st.integers(1, 64), st.sampled_from(["png", "webp", "jpg"]), st.booleans())
def test_encode_decode_round_trip_keeps_the_size(height, width, fmt, alpha_only):
    rng = np.random.default_rng(height * 100 + width)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (height, width), dtype=np.uint8)
    out = encode(rgb, alpha, OutputOptions.parse(fmt, None, alpha_only))
    assert decode(out, 10_000).shape == (height, width, 3)
