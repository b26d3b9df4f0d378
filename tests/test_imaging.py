"""imaging: every input kind decodes to RGB, bad bytes are refused with a specific code, outputs are right."""

from __future__ import annotations

import io
import json
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile

from cvunet_matting.errors import InputError
from cvunet_matting.image import imaging
from cvunet_matting.image.encoding import OutputOptions, encode
from cvunet_matting.image.imaging import decode, probe, sniff_extension

LIMIT = 50_000_000
RED, GREEN, BLUE, WHITE = (220, 30, 40), (30, 200, 60), (20, 40, 230), (250, 250, 250)


def quadrants(height: int = 32, width: int = 48) -> np.ndarray:
    """RGB with four coloured quadrants: shows colour order, flips and rotations at once."""
    rgb = np.empty((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    rgb[:h, :w], rgb[:h, w:], rgb[h:, :w], rgb[h:, w:] = RED, GREEN, BLUE, WHITE
    return rgb


def pil_bytes(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def noise_jpeg(size: int = 160, **kwargs) -> bytes:
    """Incompressible pixels, so that a cut lands in the middle of the scan data."""
    pixels = np.random.default_rng(1).integers(0, 256, (size, size, 3), np.uint8)
    return pil_bytes(Image.fromarray(pixels), "JPEG", quality=90, **kwargs)


def assert_close(actual: np.ndarray, expected: np.ndarray, tolerance: float = 12.0) -> None:
    """Mean absolute difference: lossy codecs are never byte-exact."""
    assert actual.shape == expected.shape
    assert np.abs(actual.astype(int) - expected.astype(int)).mean() <= tolerance


def assert_quadrants(rgb: np.ndarray, expected: np.ndarray | None = None) -> None:
    expected = quadrants() if expected is None else expected
    assert rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    assert_close(rgb, expected)


def refused(data: bytes, max_pixels: int = LIMIT) -> InputError:
    with pytest.raises(InputError) as info:
        decode(data, max_pixels)
    return info.value


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(side: int = 20000) -> bytes:
    """A real 1-bit PNG of side x side pixels: ~50 MB of zero rows deflated to a few tens of KB."""
    squeeze, row = zlib.compressobj(9), bytes(1 + side // 8)
    body = b"".join(squeeze.compress(row * 1000) for _ in range(side // 1000)) + squeeze.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


# --- inputs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "kwargs"),
    [
        ("JPEG", {"quality": 95}),
        ("PNG", {}),
        ("WEBP", {"quality": 95}),
        ("WEBP", {"lossless": True}),
        ("BMP", {}),
        ("TIFF", {}),
        ("TIFF", {"compression": "tiff_lzw"}),
        ("GIF", {}),
    ],
)
def test_each_format_decodes_to_rgb(fmt, kwargs):
    data = pil_bytes(Image.fromarray(quadrants()), fmt, **kwargs)
    info = probe(data, LIMIT)
    assert (info.format, info.width, info.height) == (fmt.lower(), 48, 32)
    assert_quadrants(decode(data, LIMIT))


def test_cmyk_jpeg_becomes_rgb():
    data = pil_bytes(Image.fromarray(quadrants()).convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    assert_quadrants(decode(data, LIMIT))


def test_exif_orientation_6_rotates_clockwise():
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = pil_bytes(Image.fromarray(quadrants()), "JPEG", quality=95, exif=exif.tobytes())
    info = probe(data, LIMIT)
    assert (info.width, info.height) == (32, 48)  # as displayed
    rgb = decode(data, LIMIT)
    assert rgb.shape == (48, 32, 3)
    assert_quadrants(rgb, np.rot90(quadrants(), k=-1))  # blue top-left, red top-right


def test_png_16_bit_colour_and_grey():
    ok, colour = cv2.imencode(".png", quadrants()[..., ::-1].astype(np.uint16) * 257)
    assert ok and colour.tobytes()[24] == 16  # IHDR bit depth
    assert_quadrants(decode(colour.tobytes(), LIMIT))
    ramp = np.tile(np.arange(0, 65536, 1024, dtype=np.uint16), (8, 1))
    ok, grey = cv2.imencode(".png", ramp)
    rgb = decode(grey.tobytes(), LIMIT)
    assert rgb.shape == (8, 64, 3) and np.array_equal(rgb[..., 1], (ramp >> 8).astype(np.uint8))


@pytest.mark.parametrize("mode", ["L", "LA"])
def test_grey_png_becomes_three_equal_channels(mode):
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (10, 1))
    image = Image.fromarray(grey).convert(mode)
    rgb = decode(pil_bytes(image, "PNG"), LIMIT)
    assert rgb.shape == (10, 64, 3)
    assert all(np.array_equal(rgb[..., c], grey) for c in range(3))


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_input_alpha_is_dropped_and_colour_kept(fmt):
    alpha = np.zeros((32, 48), np.uint8)
    alpha[:, 24:] = 128  # left fully transparent, right half transparent
    rgba = np.dstack([quadrants(), alpha])
    data = pil_bytes(Image.fromarray(rgba, "RGBA"), fmt, **({"lossless": True, "exact": True} if fmt == "WEBP" else {}))
    assert_quadrants(decode(data, LIMIT))  # colours intact: not black, not premultiplied


def test_palette_png_with_transparency():
    image = Image.fromarray(quadrants()).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    data = pil_bytes(image, "PNG", transparency=0)
    assert Image.open(io.BytesIO(data)).mode == "P"
    assert_quadrants(decode(data, LIMIT))


def test_animated_gif_gives_its_first_frame():
    frames = [Image.fromarray(quadrants()), Image.fromarray(np.zeros((32, 48, 3), np.uint8))]
    data = pil_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert_quadrants(decode(data, LIMIT))


def test_jpeg_with_a_trailer_still_decodes():
    data = noise_jpeg() + b"\x00\x00\x00\x18ftypmp42" + bytes(500)  # e.g. a phone's motion photo
    assert decode(data, LIMIT).shape == (160, 160, 3)


def test_sniff_extension_uses_magic_bytes():
    rgb = Image.fromarray(quadrants())
    for fmt, ext in [("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp"), ("GIF", ".gif"), ("TIFF", ".tif")]:
        assert sniff_extension(pil_bytes(rgb, fmt)) == ext
    assert sniff_extension(b"GIF8") is None and sniff_extension(b"") is None
    assert sniff_extension(b"<svg/>") is None


# --- refused inputs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (b"", "empty", "empty"),
        (b"Dear team,\nplease find the photo attached.\n", "not_an_image", "text"),
        (bytes(np.random.default_rng(2).integers(0, 256, 3000, np.uint8)), "not_an_image", "unknown kind"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "svg", "SVG"),
        (b"\xef\xbb\xbf  <svg width='10' height='10'></svg>", "svg", "SVG"),
        (b"\x00\x00\x00\x1cftypheic" + bytes(64), "unsupported_format", "HEIF"),
    ],
)
def test_non_images_are_refused_with_a_specific_code(data, code, words):
    error = refused(data)
    assert error.code == code and words in str(error)


def test_known_but_unsupported_format():
    error = refused(pil_bytes(Image.fromarray(quadrants()), "ICO"))
    assert error.code == "unsupported_format" and "ICO" in str(error) and "PNG" in str(error)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("progressive", [False, True])
def test_truncated_jpeg_is_refused_not_grey(fraction, progressive):
    data = noise_jpeg(progressive=progressive)
    error = refused(data[: int(len(data) * fraction)])
    assert error.code == "truncated" and "JPEG" in str(error)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncation_is_caught_even_if_the_decoder_pads_with_grey(monkeypatch, fmt):
    # OpenCV 4 returns a cut JPEG padded with grey, without an error: our own check must catch it.
    def grey_padding(buffer, flags):
        return np.full((160, 160, 3), 128, np.uint8)

    monkeypatch.setattr(imaging.cv2, "imdecode", grey_padding)
    data = noise_jpeg() if fmt == "JPEG" else pil_bytes(Image.open(io.BytesIO(noise_jpeg())), "PNG")
    assert decode(data, LIMIT).shape == (160, 160, 3)  # complete files still go through the decoder
    assert refused(data[: len(data) * 2 // 3]).code == "truncated"


def test_jpeg_missing_only_its_end_marker_is_truncated():
    assert refused(noise_jpeg()[:-2]).code == "truncated"


def test_truncation_is_found_despite_an_embedded_thumbnail():
    # An APP1 segment holding a complete JPEG (with its own EOI): a naive search for FFD9 finds that.
    thumb = pil_bytes(Image.fromarray(quadrants()), "JPEG")
    main = noise_jpeg()
    data = main[:2] + b"\xff\xe1" + struct.pack(">H", len(thumb) + 8) + b"Exif\0\0" + thumb + main[2:]
    assert decode(data, LIMIT).shape == (160, 160, 3)
    assert refused(data[: len(data) * 3 // 4]).code == "truncated"


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.95])
def test_truncated_png_is_refused(fraction):
    pixels = np.random.default_rng(3).integers(0, 256, (120, 120, 3), np.uint8)
    data = pil_bytes(Image.fromarray(pixels), "PNG")
    error = refused(data[: int(len(data) * fraction)])
    assert error.code == "truncated" and "PNG" in str(error)


@pytest.mark.parametrize("fmt", ["WEBP", "BMP", "TIFF", "GIF"])
def test_other_truncated_formats_are_refused(fmt):
    pixels = np.random.default_rng(4).integers(0, 256, (64, 64, 3), np.uint8)
    data = pil_bytes(Image.fromarray(pixels), fmt)
    assert refused(data[: len(data) // 2]).code == "truncated"


def test_corrupt_png_data_is_not_an_image():
    data = pil_bytes(Image.fromarray(quadrants()), "PNG")
    idat = data.index(b"IDAT") + 4
    corrupt = data[:idat] + bytes(len(data) - idat - 16) + data[-16:]  # zeroed IDAT body, IEND kept
    error = refused(corrupt)
    assert error.code == "not_an_image" and "corrupt" in str(error)


def test_decompression_bomb_is_refused_without_decoding(monkeypatch):
    data = bomb_png()
    assert len(data) < 100_000

    def no_decoding(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(imaging.cv2, "imdecode", no_decoding)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    error = refused(data)
    assert error.code == "too_many_pixels" and "20000x20000" in str(error)


def test_pixel_limit_applies_before_decoding():
    data = pil_bytes(Image.fromarray(quadrants()), "PNG")
    assert probe(data, 48 * 32) == imaging.ImageInfo("png", 48, 32)
    assert decode(data, 48 * 32).shape == (32, 48, 3)
    error = refused(data, 48 * 32 - 1)
    assert error.code == "too_many_pixels" and "48x32" in str(error) and "over the limit" in str(error)


def test_huge_jpeg_header_is_refused():
    data = bytearray(pil_bytes(Image.fromarray(quadrants()), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)  # height, width
    assert refused(bytes(data)).code == "too_many_pixels"


# --- outputs -------------------------------------------------------------------------------------------

ALPHA = np.zeros((32, 48), np.uint8)
ALPHA[:, 24:] = 255
ALPHA[:, 20:28] = 128  # a half-transparent band in the middle


def read_back(data: bytes) -> np.ndarray:
    """Decode an output with its alpha, in RGB(A) order."""
    out = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return out if out.ndim == 2 else cv2.cvtColor(out, cv2.COLOR_BGRA2RGBA if out.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def test_default_is_an_rgba_png_keeping_pixels_and_alpha():
    data = encode(quadrants(), ALPHA, OutputOptions())
    assert data.startswith(b"\x89PNG")
    out = read_back(data)
    assert np.array_equal(out[..., :3], quadrants()) and np.array_equal(out[..., 3], ALPHA)


def test_alpha_only_is_a_grey_png_of_the_matte():
    options = OutputOptions.parse("jpg", "#ff0000", "true")
    out = read_back(encode(quadrants(), ALPHA, options))
    assert out.ndim == 2 and np.array_equal(out, ALPHA)


MAGIC = {"png": lambda d: d.startswith(b"\x89PNG"), "jpg": lambda d: d.startswith(b"\xff\xd8\xff")}
MAGIC["webp"] = lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP"


@pytest.mark.parametrize("fmt", ["png", "webp", "jpg"])
@pytest.mark.parametrize("bg_color", [None, "0,0,255"])
def test_the_bytes_are_the_format_asked_for(fmt, bg_color):
    data = encode(quadrants(), ALPHA, OutputOptions.parse(fmt, bg_color), threads=2)
    assert MAGIC[fmt](data), data[:16]


def test_webp_without_a_colour_keeps_alpha():
    data = encode(quadrants(), ALPHA, OutputOptions("webp"))
    assert MAGIC["webp"](data)
    out = read_back(data)
    assert out.shape == (32, 48, 4)
    assert np.abs(out[..., 3].astype(int) - ALPHA).max() <= 2
    assert_close(out[:, 30:, :3], quadrants()[:, 30:])


@pytest.mark.parametrize("fmt", ["png", "webp", "jpg"])
def test_flattening_onto_a_colour(fmt):
    out = read_back(encode(quadrants(), ALPHA, OutputOptions.parse(fmt, "0,0,255")))
    assert out.shape == (32, 48, 3)
    assert_close(out[:, :16], np.broadcast_to(np.array([0, 0, 255], np.uint8), (32, 16, 3)), 6)  # alpha 0
    assert_close(out[:, 32:], quadrants()[:, 32:], 6)  # alpha 255: the original pixels
    if fmt == "png":  # lossless: the half-transparent band is the exact mix
        expected = (quadrants()[:, 20:24].astype(int) * 128 + np.array([0, 0, 255]) * 127 + 127) // 255
        assert np.array_equal(out[:, 20:24], expected)


def test_jpg_without_a_colour_goes_onto_white():
    options = OutputOptions.parse("jpeg")
    assert options.bg_color == (255, 255, 255) and options.mimetype == "image/jpeg"
    out = read_back(encode(quadrants(), ALPHA, options))
    assert np.all(out[:, :16] >= 245)


def test_encode_checks_its_arrays():
    with pytest.raises(ValueError, match="alpha"):
        encode(quadrants(), ALPHA[:10], OutputOptions())
    with pytest.raises(ValueError, match="rgb"):
        encode(quadrants().astype(np.float32), ALPHA, OutputOptions())


@pytest.mark.parametrize(
    ("args", "expected", "key"),
    [
        ((), ("png", None, False), "png;bg=none;alpha=0"),
        (("PNG", "", "false"), ("png", None, False), "png;bg=none;alpha=0"),
        ((".webp", "#AbCdEf"), ("webp", (0xAB, 0xCD, 0xEF), False), "webp;bg=abcdef;alpha=0"),
        (("jpeg", None), ("jpg", (255, 255, 255), False), "jpg;bg=ffffff;alpha=0"),
        (("jpg", "#f0a"), ("jpg", (255, 0, 170), False), "jpg;bg=ff00aa;alpha=0"),
        (("png", "102030"), ("png", (16, 32, 48), False), "png;bg=102030;alpha=0"),
        (("webp", " 1, 2 ,3 "), ("webp", (1, 2, 3), False), "webp;bg=010203;alpha=0"),
        (("png", "Black"), ("png", (0, 0, 0), False), "png;bg=000000;alpha=0"),
        (("jpg", "white", True), ("png", None, True), "png;bg=none;alpha=1"),
        (("webp", None, "yes"), ("png", None, True), "png;bg=none;alpha=1"),
    ],
)
def test_parse_valid_options(args, expected, key):
    options = OutputOptions.parse(*args)
    assert (options.format, options.bg_color, options.alpha_only) == expected
    assert options.key() == key
    assert options.extension == "." + options.format


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("gif",), "output format"),
        (("png", "#12345"), "bg_color"),
        (("png", "300,0,0"), "bg_color"),
        (("png", "1,2"), "bg_color"),
        (("png", "abc"), "bg_color"),  # three digits need the '#'
        (("png", "purple-ish"), "bg_color"),
        (("png", None, "maybe"), "alpha_only"),
        (("png", None, 2), "alpha_only"),
    ],
)
def test_parse_refuses_bad_values_with_a_specific_message(args, words):
    with pytest.raises(InputError) as info:
        OutputOptions.parse(*args)
    assert info.value.code == "bad_option" and words in str(info.value)


def test_equal_options_have_one_key():
    keys = {OutputOptions.parse(*args).key() for args in [("jpg",), ("JPEG", "#fff"), ("jpg", "255,255,255")]}
    assert keys == {"jpg;bg=ffffff;alpha=0"}
    assert OutputOptions.parse("png", "red").key() != OutputOptions.parse("webp", "red").key()


@pytest.mark.parametrize("args", [(), ("jpg",), ("webp", "#123456"), ("png", None, True)])
def test_to_dict_round_trips_through_json(args):
    options = OutputOptions.parse(*args)
    again = OutputOptions.from_dict(json.loads(json.dumps(options.to_dict())))
    assert again == options and again.key() == options.key()


@pytest.mark.parametrize(
    "data",
    [[], {"format": "png", "colour": "red"}, {"format": 5}, {"bg_color": [1, 2]}, {"bg_color": [0, 0, 256]}],
)
def test_from_dict_refuses_bad_dicts(data):
    with pytest.raises(InputError) as info:
        OutputOptions.from_dict(data)
    assert info.value.code == "bad_option"


def test_the_published_spellings_are_exactly_the_accepted_ones():
    from cvunet_matting.image.encoding import FLAG_WORDS, FORMAT_WORDS
    from cvunet_matting.webapp.api.openapi import document

    form = document()["paths"]["/api/v1/images"]["post"]["requestBody"]["content"]["multipart/form-data"]
    properties = form["schema"]["properties"]
    assert properties["alpha_only"]["enum"] == list(FLAG_WORDS)
    assert properties["format"]["enum"] == list(FORMAT_WORDS)
    for word, flag in FLAG_WORDS.items():
        assert OutputOptions.parse(alpha_only=word).alpha_only is flag
    for word, fmt in FORMAT_WORDS.items():
        assert OutputOptions.parse(format=word).format == fmt
    for word in (" true", "TRUE", "Yes", "tru"):
        with pytest.raises(InputError, match="alpha_only"):
            OutputOptions.parse(alpha_only=word)
    for word in (" png", "Png", "..png", "gif"):
        with pytest.raises(InputError, match="output format"):
            OutputOptions.parse(format=word)
