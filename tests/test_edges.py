"""The matte's edges: the input's own alpha, refinement, foreground colours, edge controls and their options."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cvunet_matting.config import load_settings
from cvunet_matting.errors import InputError
from cvunet_matting.image.edges import controls, finish, refine, with_input_alpha
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.image.foreground import FADE, decontaminate
from cvunet_matting.image.input_alpha import read_alpha
from cvunet_matting.image.matting import matte_bytes
from cvunet_matting.model.session import MattingSession, resolve_model

FORE, BACK, GREEN = (200, 40, 40), (30, 60, 200), (40, 170, 70)


@pytest.fixture(scope="module")
def tiny(tiny_model):
    """The tiny CV-UNet-shaped model (its alpha is the brightness) and its settings."""
    settings = load_settings({"CVUNET_MODEL": str(tiny_model)})
    return MattingSession(*resolve_model(settings), settings), settings


def png(pixels: np.ndarray, mode: str, **params) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, "PNG", **params)
    return buffer.getvalue()


def read_rgba(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def step(height: int, width: int, at: int) -> tuple[np.ndarray, np.ndarray]:
    """A two-colour photo split at column `at`, and its hard matte (foreground on the right)."""
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[:, :at], rgb[:, at:] = BACK, FORE
    alpha = np.zeros((height, width), np.uint8)
    alpha[:, at:] = 255
    return rgb, alpha


def soft_edge(height: int, width: int, ramp: int) -> tuple[np.ndarray, np.ndarray]:
    """A photo mixed from FORE and BACK over a linear alpha ramp `ramp` pixels wide in the middle."""
    start = (width - ramp) // 2
    line = np.clip((np.arange(width) - start + 0.5) / ramp, 0, 1)
    alpha = np.uint8(np.broadcast_to(line, (height, width)) * 255 + 0.5)
    a = alpha[..., None] / 255
    rgb = np.uint8(a * np.array(FORE) + (1 - a) * np.array(BACK) + 0.5)
    return rgb, alpha


# The input's own alpha


def test_the_input_alpha_multiplies_the_matte():
    alpha = np.array([[0, 128, 255, 255, 255]], np.uint8)
    given = np.array([[255, 255, 0, 200, 255]], np.uint8)
    assert with_input_alpha(alpha, given).tolist() == [[0, 128, 0, 200, 255]]
    assert with_input_alpha(alpha, None) is alpha


@pytest.mark.parametrize(
    ("mode", "pixels", "params", "expected"),
    [
        ("RGBA", np.dstack([np.full((6, 9, 3), 90, np.uint8), np.full((6, 9), 200, np.uint8)]), {}, 200),
        ("LA", np.dstack([np.full((6, 9), 90, np.uint8), np.full((6, 9), 7, np.uint8)]), {}, 7),
        ("P", np.zeros((6, 9), np.uint8), {"transparency": 0}, 0),  # a palette with a transparent colour
    ],
)
def test_input_alpha_is_read_from_png(mode, pixels, params, expected):
    alpha = read_alpha(png(pixels, mode, **params), (6, 9))
    assert alpha.shape == (6, 9) and alpha.dtype == np.uint8 and (alpha == expected).all()


@pytest.mark.parametrize(("fmt", "params"), [("WEBP", {"lossless": True}), ("TIFF", {}), ("GIF", {})])
def test_input_alpha_is_read_from_the_other_formats_that_carry_it(fmt, params):
    pixels = np.full((6, 9, 4), 90, np.uint8)
    pixels[..., 3] = 255
    pixels[:3, :4, 3] = 0
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buffer, fmt, **params)
    alpha = read_alpha(buffer.getvalue(), (6, 9))
    assert (alpha[:3, :4] == 0).all() and (alpha[3:] == 255).all()


def test_sixteen_bit_alpha_is_scaled_to_eight():
    bgra = np.full((5, 4, 4), 40000, np.uint16)
    bgra[..., 3] = 100 * 257
    ok, buffer = cv2.imencode(".png", bgra)
    assert ok and (read_alpha(buffer.tobytes(), (5, 4)) == 100).all()


def test_opaque_inputs_have_no_alpha():
    rgb = np.full((6, 9, 3), 90, np.uint8)
    assert read_alpha(png(rgb, "RGB"), (6, 9)) is None
    assert read_alpha(png(np.dstack([rgb, np.full((6, 9), 255, np.uint8)]), "RGBA"), (6, 9)) is None
    ok, jpeg = cv2.imencode(".jpg", rgb)
    assert ok and read_alpha(jpeg.tobytes(), (6, 9)) is None


def test_an_rgba_input_differs_from_its_opaque_twin(tiny):
    session, settings = tiny
    rgb = np.full((20, 30, 3), 255, np.uint8)  # the tiny model makes white opaque
    rgba = np.dstack([rgb, np.full((20, 30), 200, np.uint8)])
    rgba[:5, :5, 3] = 0
    opaque = read_rgba(matte_bytes(png(rgb, "RGB"), OutputOptions(), session, settings).data)
    seen = read_rgba(matte_bytes(png(rgba, "RGBA"), OutputOptions(feather=3), session, settings).data)
    assert (opaque[..., 3] == 255).all()
    assert (seen[:5, :5, 3] == 0).all(), "a transparent input pixel stays transparent, feathered or not"
    assert (seen[10:, 10:, 3] == 200).all()


# Refinement and foreground colours on synthetic edges


@pytest.mark.parametrize("size", [(120, 160, 81), (1600, 2048, 1024)])  # full size, and above the working copy
def test_a_step_edge_stays_a_step(size):
    rgb, alpha = step(*size)
    assert np.abs(refine(rgb, alpha).astype(int) - alpha).max() <= 2
    assert (decontaminate(rgb.copy(), alpha) == rgb).all(), "no partly transparent pixel: nothing to change"


@pytest.mark.parametrize("size", [(100, 240), (1200, 1800)])
def test_a_soft_edges_colour_is_recovered(size):
    rgb, alpha = soft_edge(*size, ramp=12)
    fixed = decontaminate(rgb.copy(), alpha)
    a = alpha.astype(float)[..., None] / 255
    solid = (alpha >= FADE) & (alpha < 255)
    assert np.abs(fixed[solid].astype(int) - FORE).max() <= 16
    assert np.abs(rgb[solid].astype(int) - FORE).max() > 100  # the mix was far from the foreground

    def halo(colours):
        ours = a * colours + (1 - a) * np.array(GREEN)
        truth = a * np.array(FORE) + (1 - a) * np.array(GREEN)
        return np.abs(ours - truth).max()

    assert halo(fixed) <= 12 < 36 < halo(rgb)  # the worst pixel, on a new background


def test_the_colours_are_recovered_in_a_photo_that_is_a_view_of_a_larger_array():
    # A photo may come as a view (a crop of a wider array): the colours are then written into a
    # copy that finish() returns, never into a temporary that is thrown away.
    rgb, alpha = soft_edge(100, 240, ramp=12)
    wider = np.zeros((100, 300, 3), np.uint8)
    wider[:, :240] = rgb
    view = wider[:, :240]
    assert not view.flags.c_contiguous
    expected, _ = finish(rgb.copy(), alpha, None, OutputOptions())
    out, _ = finish(view, alpha, None, OutputOptions())
    assert (out != rgb).any(), "the soft edge's colours were changed"
    assert (out == expected).all()


def test_refine_sharpens_an_upscaled_matte_toward_the_photos_edge():
    rgb, alpha = step(1600, 2400, 1201)
    blurred = cv2.resize(cv2.resize(alpha, (600, 400), interpolation=cv2.INTER_AREA), (2400, 1600))
    before = np.abs(blurred.astype(int) - alpha).sum()
    refined = refine(rgb, blurred)
    assert np.abs(refined.astype(int) - alpha).sum() < 0.6 * before
    assert (refined[:, 1200] < 128).all() and (refined[:, 1201] > 128).all()  # the step is where the photo's is


# Edge controls


def test_threshold_zeroes_only_the_faint_alpha():
    alpha = np.array([[0, 5, 15, 16, 17, 255]], np.uint8)
    assert controls(alpha, threshold=16).tolist() == [[0, 0, 0, 16, 17, 255]]


def test_erosion_shrinks_and_feathering_softens():
    disc = np.zeros((101, 101), np.uint8)
    cv2.circle(disc, (50, 50), 30, 255, -1)
    eroded = controls(disc, erode=5)
    assert set(np.unique(eroded)) == {0, 255}
    assert eroded[50, 50 + 24] == 255 and eroded[50, 50 + 26] == 0 and disc[50, 50 + 26] == 255
    _, alpha = step(20, 60, 30)
    feathered = controls(alpha, feather=6)[10]
    assert feathered[:20].max() == 0 and feathered[41:].min() == 255
    assert 0 < feathered[29] < 128 < feathered[30] < 255


def test_the_opaque_threshold_makes_a_see_through_subject_solid_and_leaves_its_edge_soft():
    """The close-up cat's case: ISNet leaves patches of the coat at alpha 0.6-0.9 inside the subject."""
    _, alpha = step(20, 60, 30)
    alpha[:, 35:] = 180  # a grey patch inside the subject
    alpha[:, 28:31] = [60, 120, 170]  # its soft edge
    solid = controls(alpha, opaque=150)
    assert (solid[:, 35:] == 255).all() and (solid[:, 30] == 255).all()
    assert (solid[:, 28:30] == alpha[:, 28:30]).all() and (solid[:, :28] == 0).all()
    assert (controls(alpha) == alpha).all()  # 0: off


def test_finish_applies_the_options_in_order():
    rgb, alpha = soft_edge(60, 120, ramp=30)
    options = OutputOptions(alpha_threshold=100, refine=False, decontaminate=False, solidify=False)
    out_rgb, out_alpha = finish(rgb.copy(), alpha, None, options)
    assert (out_rgb == rgb).all() and (out_alpha == np.where(alpha < 100, 0, alpha)).all()
    given = np.zeros_like(alpha)
    assert (finish(rgb.copy(), alpha, given, OutputOptions())[1] == 0).all()


# Options, keys and the CLI


def test_edge_options_parse_from_user_text():
    options = OutputOptions.parse("png", None, False, "16", "3", "4", "false", "off", "200", "no")
    assert (options.alpha_threshold, options.erode, options.feather, options.opaque_threshold) == (16, 3, 4, 200)
    assert options.refine is False and options.decontaminate is False and options.solidify is False
    empty = OutputOptions.parse(
        alpha_threshold="", erode=None, refine="", decontaminate="", opaque_threshold="", solidify=""
    )
    assert empty == OutputOptions()
    defaults = OutputOptions()
    assert (defaults.alpha_threshold, defaults.erode, defaults.feather, defaults.opaque_threshold) == (0, 0, 0, 0)
    assert defaults.refine is True and defaults.decontaminate is True and defaults.solidify is True


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("alpha_threshold", "256"),
        ("alpha_threshold", "-1"),
        ("opaque_threshold", "256"),
        ("opaque_threshold", 1.0),
        ("erode", "1.5"),
        ("erode", " 3"),
        ("erode", 65),
        ("feather", True),
        ("refine", "maybe"),
        ("decontaminate", 2),
        ("solidify", "maybe"),
        ("solidify", 0.0),
    ],
)
def test_bad_edge_options_are_refused_by_name(field, value):
    with pytest.raises(InputError) as info:
        OutputOptions.parse(**{field: value})
    assert info.value.code == "bad_option" and field in str(info.value)
    with pytest.raises(InputError, match=field):
        OutputOptions.from_dict({field: value})


def test_edge_options_round_trip_and_old_rows_read_as_defaults():
    options = OutputOptions.parse("webp", "#102030", False, 9, 2, 1, True, False, 240)
    again = OutputOptions.from_dict(json.loads(json.dumps(options.to_dict())))
    assert again == options and again.key() == options.key()
    assert OutputOptions.from_dict({"format": "png", "bg_color": None, "alpha_only": False}) == OutputOptions()
    # A worker of the version before refuses keys it does not know: a new option at its default is left out.
    assert "opaque_threshold" not in OutputOptions().to_dict()
    assert OutputOptions(opaque_threshold=200).to_dict()["opaque_threshold"] == 200
    assert "solidify" not in OutputOptions().to_dict()
    assert OutputOptions(solidify=False).to_dict()["solidify"] is False
    assert OutputOptions.from_dict(OutputOptions(solidify=False).to_dict()) == OutputOptions(solidify=False)


def test_the_key_changes_with_each_edge_option():
    base = OutputOptions()
    assert base.key() == "png;bg=none;alpha=0"  # results made before edge options keep their keys
    changed = [
        OutputOptions(alpha_threshold=1),
        OutputOptions(opaque_threshold=200),
        OutputOptions(erode=1),
        OutputOptions(feather=1),
        OutputOptions(refine=not base.refine),
        OutputOptions(decontaminate=not base.decontaminate),
        OutputOptions(solidify=not base.solidify),
    ]
    keys = {base.key(), *(options.key() for options in changed)}
    assert len(keys) == 8
    assert OutputOptions(solidify=False).key() == "png;bg=none;alpha=0;solidify=0"
    assert OutputOptions.parse(erode="3").key() == OutputOptions(erode=3).key()
    # The bare matte has no colours: decontamination cannot change it, so it cannot split its key.
    assert OutputOptions(alpha_only=True, decontaminate=False) == OutputOptions(alpha_only=True)


def test_the_matte_command_takes_the_edge_flags(tmp_path, tiny):
    from cvunet_matting.commands.cli import main

    source = tmp_path / "in.png"
    source.write_bytes(png(np.full((16, 16, 3), 255, np.uint8), "RGB"))
    flags = ["--alpha-threshold", "10", "--opaque-threshold", "200", "--erode", "1", "--feather", "2", "--no-refine"]
    flags.append("--no-solidify")
    done = CliRunner().invoke(main, ["matte", str(source), "-o", str(tmp_path / "out"), *flags])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "out" / "in.png").exists()
    done = CliRunner().invoke(main, ["matte", str(source), "-o", str(tmp_path / "bad"), "--erode", "99"])
    assert done.exit_code == 1 and "erode" in done.output


@pytest.mark.parametrize("height, width", [(1, 1), (1, 2), (2, 1), (1, 7), (5, 1), (2, 3)])
def test_a_photo_a_pixel_or_two_across_with_a_soft_matte_gets_its_edges(height, width):
    """The colour estimate halves its copy: a side of one pixel used to ask OpenCV for a side of none."""
    rng = np.random.default_rng(height * 10 + width)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    alpha = rng.integers(20, 236, (height, width), dtype=np.uint8)  # every pixel in the edge band
    out_rgb, out_alpha = finish(rgb.copy(), alpha, None, OutputOptions())
    assert out_rgb.shape == (height, width, 3) and out_alpha.shape == (height, width)
