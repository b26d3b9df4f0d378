"""Decoding every supported input kind, refusing bad ones with a specific code, and the outputs."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from cvunet_matting.errors import InputError
from cvunet_matting.imaging import OutputOptions, decode, encode, probe, sniff_extension

LIMIT = 50_000_000
RED, BLUE = (220, 30, 40), (20, 40, 230)


def two_colour(height: int = 40, width: int = 60) -> np.ndarray:
    """RGB: left half red, right half blue; easy to check orientation and colour order."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:, : width // 2] = RED
    rgb[:, width // 2 :] = BLUE
    return rgb


def pil_bytes(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def close(pixel, colour, tolerance=40) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(colour)) <= tolerance))


def assert_two_colour(rgb: np.ndarray, height=40, width=60):
    assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    assert close(rgb[height // 2, 5], RED) and close(rgb[height // 2, width - 5], BLUE)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF"])
def test_rgb_formats(fmt):
    data = pil_bytes(Image.fromarray(two_colour()), fmt)
    assert_two_colour(decode(data, LIMIT))


def test_cmyk_jpeg_becomes_rgb():
    data = pil_bytes(Image.fromarray(two_colour()).convert("CMYK"), "JPEG")
    assert probe(data, LIMIT).format == "jpeg"
    assert_two_colour(decode(data, LIMIT))


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = pil_bytes(Image.fromarray(two_colour()), "JPEG", exif=exif.tobytes())
    rgb = decode(data, LIMIT)
    assert rgb.shape == (60, 40, 3)  # width and height swapped
    assert close(rgb[5, 20], RED) and close(rgb[55, 20], BLUE)  # left (red) now on top


def test_png_16bit_grey_and_alpha_kinds():
    grey16 = (np.arange(40 * 60, dtype=np.uint16).reshape(40, 60) * 27).astype(np.uint16)
    ok, buf = cv2.imencode(".png", grey16)
    rgb = decode(buf.tobytes(), LIMIT)
    assert rgb.shape == (40, 60, 3) and np.allclose(rgb[..., 0], grey16 >> 8, atol=1)
    rgb16 = two_colour().astype(np.uint16) * 257
    ok, buf = cv2.imencode(".png", rgb16[:, :, ::-1])
    assert_two_colour(decode(buf.tobytes(), LIMIT))
    for mode in ("L", "LA", "RGBA", "P"):
        data = pil_bytes(Image.fromarray(two_colour()).convert(mode), "PNG")
        rgb = decode(data, LIMIT)
        assert rgb.shape == (40, 60, 3), mode
        if mode in ("RGBA", "P"):
            assert_two_colour(rgb)


def test_animated_gif_uses_the_first_frame():
    frames = [Image.fromarray(two_colour()), Image.fromarray(np.zeros((40, 60, 3), np.uint8))]
    data = pil_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert_two_colour(decode(data, LIMIT))


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty"),
        (b"hello, this is text and not an image", "not_an_image"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "svg"),
        (b"<svg width='10' height='10'></svg>", "svg"),
        (bytes(range(256)) * 4, "not_an_image"),
    ],
)
def test_refused_inputs(data, code):
    with pytest.raises(InputError) as info:
        decode(data, LIMIT)
    assert info.value.code == code and str(info.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files_are_refused_not_grey(fmt):
    data = pil_bytes(Image.fromarray(two_colour(200, 300)), fmt)
    with pytest.raises(InputError) as info:
        decode(data[: len(data) * 2 // 3], LIMIT)
    assert info.value.code == "truncated"


def bomb_png(width: int, height: int) -> bytes:
    """A few hundred bytes claiming a huge size: a decompression bomb's header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused_from_the_header():
    data = bomb_png(30000, 30000)
    assert len(data) < 200
    with pytest.raises(InputError) as info:
        decode(data, LIMIT)
    assert info.value.code == "too_many_pixels" and "30000x30000" in str(info.value)


def test_pixel_limit_is_configurable():
    data = pil_bytes(Image.fromarray(two_colour()), "PNG")
    assert probe(data, 2400).width == 60
    with pytest.raises(InputError, match="over the limit"):
        probe(data, 2399)


def test_sniff_extension():
    assert sniff_extension(pil_bytes(Image.fromarray(two_colour()), "WEBP")) == ".webp"
    assert sniff_extension(pil_bytes(Image.fromarray(two_colour()), "JPEG")) == ".jpg"
    assert sniff_extension(b"plain text") is None


ALPHA = np.tile(np.linspace(0, 255, 60).astype(np.uint8), (40, 1))


def test_rgba_png_keeps_original_pixels_and_alpha():
    out = cv2.imdecode(np.frombuffer(encode(two_colour(), ALPHA, OutputOptions()), np.uint8), cv2.IMREAD_UNCHANGED)
    assert out.shape == (40, 60, 4)
    assert np.array_equal(out[..., 3], ALPHA)
    assert np.array_equal(out[..., :3][..., ::-1], two_colour())


def test_alpha_only_is_a_grey_png():
    options = OutputOptions.parse("webp", None, "true")
    assert options.format == "png" and options.alpha_only
    out = cv2.imdecode(np.frombuffer(encode(two_colour(), ALPHA, options), np.uint8), cv2.IMREAD_UNCHANGED)
    assert out.ndim == 2 and np.array_equal(out, ALPHA)


@pytest.mark.parametrize("fmt", ["jpg", "webp", "png"])
def test_flattening_on_a_background_colour(fmt):
    options = OutputOptions.parse(fmt, "#00ff00")
    out = cv2.imdecode(np.frombuffer(encode(two_colour(), ALPHA, options), np.uint8), cv2.IMREAD_UNCHANGED)
    assert out.shape == (40, 60, 3)
    rgb = out[..., ::-1]
    assert close(rgb[20, 0], (0, 255, 0), 12)  # alpha 0 -> the background colour
    assert close(rgb[20, 59], BLUE, 12)  # alpha 255 -> the original pixel


def test_webp_without_background_keeps_alpha():
    out = cv2.imdecode(
        np.frombuffer(encode(two_colour(), ALPHA, OutputOptions("webp")), np.uint8), cv2.IMREAD_UNCHANGED
    )
    assert out.shape == (40, 60, 4) and abs(int(out[20, 30, 3]) - int(ALPHA[20, 30])) <= 8


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (("png", None, False), "png;bg=none;alpha=0"),
        (("JPEG", None, False), "jpg;bg=ffffff;alpha=0"),
        (("webp", "#abc", False), "webp;bg=aabbcc;alpha=0"),
        (("png", "10, 20, 30", "0"), "png;bg=0a141e;alpha=0"),
        (("jpg", "black", "yes"), "png;bg=none;alpha=1"),
    ],
)
def test_options_parse_and_key(args, key):
    options = OutputOptions.parse(*args)
    assert options.key() == key
    assert OutputOptions.from_dict(options.to_dict()) == options


@pytest.mark.parametrize(
    "args", [("gif", None, False), ("png", "#12345", False), ("png", "300,0,0", False), ("png", None, "maybe")]
)
def test_bad_options_are_refused(args):
    with pytest.raises(InputError) as info:
        OutputOptions.parse(*args)
    assert info.value.code == "bad_option"
