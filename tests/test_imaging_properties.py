"""Properties: whatever bytes or option text arrive, the answer is a valid image or an InputError."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cvunet_matting.errors import InputError
from cvunet_matting.image.encoding import OutputOptions, encode
from cvunet_matting.image.imaging import decode

FAST = settings(max_examples=80, deadline=None)
LIMIT = 1_000_000


def sample(fmt: str) -> bytes:
    pixels = np.random.default_rng(5).integers(0, 256, (24, 32, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


SAMPLES = {fmt: sample(fmt) for fmt in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")}
MAGIC = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*", b"RIFF\x00\x01\x00\x00WEBP"]


def image_or_input_error(data: bytes) -> np.ndarray | None:
    """The contract of decode(): an HxWx3 uint8 C-contiguous array, or an InputError with a code."""
    try:
        rgb = decode(data, LIMIT)
    except InputError as exc:
        assert exc.code and str(exc)
        return None
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    assert 0 < rgb.shape[0] * rgb.shape[1] <= LIMIT
    return rgb


@FAST
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(data):
    image_or_input_error(data)


@FAST
@given(st.sampled_from(MAGIC), st.binary(max_size=512))
def test_bytes_behind_a_known_signature(magic, tail):
    image_or_input_error(magic + tail)


@FAST
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_random_truncation(fmt, data):
    full = SAMPLES[fmt]
    cut = data.draw(st.integers(0, len(full) - 1))
    result = image_or_input_error(full[:cut])
    # JPEG ends with its EOI marker, PNG with a 12-byte IEND chunk: cutting into them is truncation.
    if (fmt == "JPEG" and cut <= len(full) - 2) or (fmt == "PNG" and cut <= len(full) - 12):
        assert result is None


@FAST
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_random_corruption(fmt, data):
    full = bytearray(SAMPLES[fmt])
    for _ in range(data.draw(st.integers(1, 8))):
        full[data.draw(st.integers(0, len(full) - 1))] = data.draw(st.integers(0, 255))
    image_or_input_error(bytes(full))


TEXT = st.one_of(st.none(), st.text(max_size=16), st.sampled_from(["png", "JPEG", "webp", "#fff", "1,2,3", "true"]))


@FAST
@given(TEXT, TEXT, st.one_of(TEXT, st.booleans()))
def test_parse_gives_options_or_bad_option(fmt, colour, alpha):
    try:
        options = OutputOptions.parse(fmt, colour, alpha)
    except InputError as exc:
        assert exc.code == "bad_option" and str(exc)
        return
    assert options.format in {"png", "webp", "jpg"}
    assert options.bg_color is None or all(0 <= c <= 255 for c in options.bg_color)
    assert OutputOptions.from_dict(options.to_dict()) == options


@pytest.mark.parametrize(
    "options",
    [OutputOptions(), OutputOptions("webp"), OutputOptions("jpg"), OutputOptions("png", (9, 9, 9))],
    ids=lambda options: options.key(),
)
@FAST
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_encode_then_decode_keeps_the_size(options, height, width, seed):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (height, width, 3), np.uint8)
    alpha = rng.integers(0, 256, (height, width), np.uint8)
    assert decode(encode(rgb, alpha, options), LIMIT).shape == (height, width, 3)


@FAST
@given(st.integers(1, 40), st.integers(1, 40))
def test_alpha_only_round_trip_is_exact(height, width):
    alpha = np.random.default_rng(height * 64 + width).integers(0, 256, (height, width), np.uint8)
    rgb = decode(encode(np.zeros((height, width, 3), np.uint8), alpha, OutputOptions(alpha_only=True)), LIMIT)
    assert np.array_equal(rgb[..., 0], alpha)
