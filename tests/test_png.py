"""The strip-parallel PNG writer: exact round trips through two independent decoders, and its checksums."""

from __future__ import annotations

import io
import os
import struct
import zlib

import cv2
import numpy as np
import pytest
from isal import isal_zlib
from PIL import Image

from cvunet_matting.config import load_settings
from cvunet_matting.image import png
from cvunet_matting.image.encoding import OutputOptions, encode


def random_image(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk, checking each CRC on the way."""
    assert data[:8] == png.SIGNATURE
    found, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + payload), kind
        found.append((kind, payload))
        pos += 12 + length
    return found


@pytest.fixture(params=["isal", "zlib"])
def small_strips(request, monkeypatch):
    """Strips of a few rows, so that small test images are split as a 12 MP one would be, and blocks
    of a few rows within them; with ISA-L's deflate (what installs bring) and with zlib (the fallback)."""
    monkeypatch.setattr(png, "MIN_STRIP_BYTES", 64)
    monkeypatch.setattr(png, "BLOCK_BYTES", 700)
    monkeypatch.setattr(png, "deflate", isal_zlib if request.param == "isal" else zlib)
    return request.param


def test_isal_is_the_deflate_that_installs_bring():
    assert png.deflate is isal_zlib


@pytest.mark.parametrize("shape", [(37, 53), (37, 53, 3), (37, 53, 4), (1, 1, 4), (200, 3)])
@pytest.mark.parametrize("threads", [1, 3, 8])
def test_round_trip_is_exact_in_opencv_and_pillow(shape, threads, small_strips):
    image = random_image(shape, seed=threads)
    data = png.encode_png(image, threads=threads)
    via_pillow = np.asarray(Image.open(io.BytesIO(data)))
    assert via_pillow.shape == image.shape and np.array_equal(via_pillow, image)
    via_opencv = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image.ndim == 3:  # OpenCV hands colour back as BGR(A)
        swap = cv2.COLOR_BGR2RGB if shape[2] == 3 else cv2.COLOR_BGRA2RGBA
        via_opencv = cv2.cvtColor(via_opencv, swap)
    assert np.array_equal(via_opencv, image)


def test_strips_become_idat_chunks_of_one_valid_zlib_stream(small_strips):
    image = random_image((40, 16, 4), seed=5)
    data = png.encode_png(image, threads=4)
    kinds = [kind for kind, _ in chunks(data)]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    assert kinds.count(b"IDAT") == 1 + 4 + 1  # zlib header, four strips, Adler-32 trailer
    stream = b"".join(payload for kind, payload in chunks(data) if kind == b"IDAT")
    assert zlib.decompress(stream) == png.filter_up(image).tobytes()  # also checks the Adler-32


@pytest.mark.parametrize("threads", [1, 4])
def test_colours_and_alpha_apart_give_the_rgba_image_s_stream(threads, small_strips):
    """The writer lays out RGBA from RGB and alpha block by block: the same scanlines, filtered across
    every block and strip boundary, as the joined RGBA image's."""
    rgb, alpha = random_image((53, 41, 3), seed=7), random_image((53, 41), seed=8)
    data = png.encode_png(rgb, threads=threads, alpha=alpha)
    stream = b"".join(payload for kind, payload in chunks(data) if kind == b"IDAT")
    assert zlib.decompress(stream) == png.filter_up(np.dstack([rgb, alpha])).tobytes()  # and the Adler-32
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), np.dstack([rgb, alpha]))


@pytest.mark.parametrize(
    ("image", "alpha"),
    [
        (np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4), np.uint8)),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), np.uint8)),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint16)),
    ],
)
def test_an_alpha_goes_only_with_rgb_of_its_size(image, alpha):
    with pytest.raises(ValueError, match="alpha"):
        png.encode_png(image, alpha=alpha)


def test_one_strip_for_small_images_whatever_the_threads():
    data = png.encode_png(random_image((64, 64, 4)), threads=16)
    assert [kind for kind, _ in chunks(data)].count(b"IDAT") == 3


def test_strip_count_is_bounded_by_threads_size_and_rows():
    big = 100 * png.MIN_STRIP_BYTES
    assert png.strip_count(rows=3000, nbytes=big, threads=2) == 2
    assert png.strip_count(rows=3000, nbytes=png.MIN_STRIP_BYTES * 3, threads=16) == 3
    assert png.strip_count(rows=1, nbytes=big, threads=4) == 1
    assert png.strip_count(rows=10, nbytes=10, threads=4) == 1


def test_up_filter_rows_are_differences_from_the_row_above():
    image = np.array([[10, 250], [5, 4]], np.uint8)
    assert png.filter_up(image).tolist() == [[2, 10, 250], [2, 251, 10]]  # 5-10 and 4-250 wrap mod 256


@pytest.mark.parametrize("cut", [0, 1, 1000, 5551, 9999])
def test_adler32_combine_matches_zlib(cut):
    data = random_image((10_000,), seed=cut).tobytes()
    joined = png.adler32_combine(zlib.adler32(data[:cut]), zlib.adler32(data[cut:]), len(data) - cut)
    assert joined == zlib.adler32(data)


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4), np.uint16), np.zeros(4, np.uint8)])
def test_refuses_what_png_cannot_hold_here(bad):
    with pytest.raises(ValueError, match="uint8"):
        png.encode_png(bad)


@pytest.mark.parametrize(
    "options",
    [OutputOptions(), OutputOptions(alpha_only=True), OutputOptions(format="png", bg_color=(0, 128, 255))],
    ids=["rgba", "alpha", "flattened"],
)
def test_encode_on_threads_gives_the_same_pixels_as_on_one(options, small_strips):
    rgb, alpha = random_image((61, 45, 3), seed=1), random_image((61, 45), seed=2)
    one, many = encode(rgb, alpha, options, threads=1), encode(rgb, alpha, options, threads=4)
    assert [kind for kind, _ in chunks(many)].count(b"IDAT") > 3  # split into strips, every CRC valid
    decoded = [np.asarray(Image.open(io.BytesIO(data))) for data in (one, many)]
    assert np.array_equal(decoded[0], decoded[1])
    if options.alpha_only:
        assert np.array_equal(decoded[1], alpha)
    elif options.bg_color is None:
        assert np.array_equal(decoded[1][..., :3], rgb) and np.array_equal(decoded[1][..., 3], alpha)


def test_encode_threads_follow_the_model_threads_unless_set():
    assert load_settings({"CVUNET_INTRA_THREADS": "3"}).encode_threads == 3
    assert load_settings({"CVUNET_INTRA_THREADS": "3", "CVUNET_ENCODE_THREADS": "5"}).encode_threads == 5
    assert load_settings({}).encode_threads == len(os.sched_getaffinity(0))
