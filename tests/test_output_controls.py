"""The output canvas's controls (crop, crop_margin, size, scale, position, bg_image, bg_blur): how they
are spelt (remove.bg's spellings), keyed, and drawn (image/layout.py, backdrop.py, drawing.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cvunet_matting.errors import ErrorCode, InputError
from cvunet_matting.image import canvas_options as canvas
from cvunet_matting.image import layout
from cvunet_matting.image.backdrop import Blurred, cover
from cvunet_matting.image.drawing import draw
from cvunet_matting.image.encoding import OutputOptions, encode

NO_EDGES = {"refine": False, "decontaminate": False, "solidify": False}  # the drawn geometry alone


# ------------------------------------------------------------------ spellings, defaults and keys


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        (None, "0"),
        ("", "0"),
        ("0", "0"),
        ("30px", "30px"),
        ("30", "30px"),
        ("10%", "10%"),
        ("10% 10% 10% 10%", "10%"),
        ("10px 5%", "10px 5%"),
        ("10px,5%", "10px 5%"),
        ("1px 2px 3px 4px", "1px 2px 3px 4px"),
        ("1px 2px 1px 2px", "1px 2px"),
        ("500px", "500px"),
        ("50%", "50%"),
        ("0px", "0"),
    ],
)
def test_crop_margin_takes_remove_bgs_spellings(text, canonical):
    assert canvas.parse_margin(text) == canonical


@pytest.mark.parametrize("text", ["501px", "51%", "-1px", "1px 2px 3px", "5em", "1.5%", "10 % ", 30, "x" * 65])
def test_bad_crop_margins_are_refused(text):
    with pytest.raises(InputError) as caught:
        canvas.parse_margin(text)
    assert caught.value.code == ErrorCode.BAD_OPTION and "crop_margin" in caught.value.reason


def test_a_relative_margin_is_a_share_of_the_subjects_own_size():
    # top and bottom from the subject's height, left and right from its width
    assert canvas.margin_of("10%", (200, 100)) == (10, 20, 10, 20)
    assert canvas.margin_of("5px 50%", (200, 100)) == (5, 100, 5, 100)
    assert canvas.margin_of("1px 2px 3px 4px", (9, 9)) == (1, 2, 3, 4)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        (None, "full"),
        ("full", "full"),
        ("auto", "full"),
        ("4k", "full"),
        ("50MP", "full"),
        ("preview", "preview"),
        ("small", "preview"),
        ("Regular", "preview"),
        ("medium", "medium"),
        ("hd", "hd"),
        ("1024", "1024"),
        ("1024px", "1024"),
        ("16", "16"),
    ],
)
def test_size_takes_remove_bgs_names_and_a_longest_side(text, canonical):
    assert canvas.parse_size(text) == canonical


@pytest.mark.parametrize("text", ["15", "16385", "big", "1024 768", "0.5", 1024])
def test_bad_sizes_are_refused(text):
    with pytest.raises(InputError, match="size"):
        canvas.parse_size(text)


def test_a_size_shrinks_and_never_enlarges():
    assert canvas.size_of("full", 4000, 3000) == (4000, 3000)
    width, height = canvas.size_of("preview", 4000, 3000)
    assert width * height <= 250_000 and width * height > 249_000 and abs(width / height - 4 / 3) < 0.01
    assert canvas.size_of("preview", 400, 300) == (400, 300)
    assert canvas.size_of("1024", 4000, 3000) == (1024, 768)
    assert canvas.size_of("1024", 3000, 4000) == (768, 1024)
    assert canvas.size_of("1024", 800, 600) == (800, 600)


@pytest.mark.parametrize(
    ("scale", "position", "expected"),
    [
        (None, None, ("original", "original")),
        ("original", None, ("original", "original")),
        ("50%", None, ("50%", "50% 50%")),  # remove.bg: a scale implies position center...
        ("50%", "original", ("50%", "original")),  # ...unless one is given
        (None, "center", ("original", "50% 50%")),
        (None, "20%", ("original", "20% 20%")),
        (None, "0% 100%", ("original", "0% 100%")),
        ("10%", "100%,0%", ("10%", "100% 0%")),
        ("100%", "Center", ("100%", "50% 50%")),
    ],
)
def test_scale_and_position_follow_remove_bgs_rules(scale, position, expected):
    options = OutputOptions.parse(scale=scale, position=position)
    assert (options.scale, options.position) == expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("scale", "9%"),
        ("scale", "101%"),
        ("scale", "50"),
        ("position", "101%"),
        ("position", "left"),
        ("position", "1% 2% 3%"),
        ("bg_blur", "201"),
        ("bg_blur", "-1"),
        ("crop", "maybe"),
    ],
)
def test_bad_canvas_options_are_refused_by_name(field, value):
    with pytest.raises(InputError) as caught:
        OutputOptions.parse(**{field: value})
    assert caught.value.code == ErrorCode.BAD_OPTION and field in caught.value.reason


def test_defaults_keep_the_old_key_and_the_old_task_arguments():
    """Results made before these options existed are reused, and a worker of the release before
    (which refuses keys it does not know) still takes tasks that do not use them."""
    options = OutputOptions.parse(crop="", crop_margin="", size="", scale="", position="", bg_blur="")
    assert options == OutputOptions()
    assert options.key() == "png;bg=none;alpha=0"
    assert OutputOptions.parse("jpg").key() == "jpg;bg=ffffff;alpha=0"
    assert set(OutputOptions().to_dict()) == {
        "format",
        "bg_color",
        "alpha_only",
        "alpha_threshold",
        "erode",
        "feather",
        "refine",
        "decontaminate",
    }
    assert OutputOptions(crop_margin="10px") == OutputOptions()  # a margin counts only with a crop


BACKGROUND = cv2.imencode(".png", np.full((8, 8, 3), 90, np.uint8))[1].tobytes()


@pytest.mark.parametrize(
    "changed",
    [
        {"crop": "true"},
        {"crop": "true", "crop_margin": "10px"},
        {"crop": "true", "crop_margin": "10%"},
        {"size": "preview"},
        {"size": "1024"},
        {"scale": "50%"},
        {"scale": "50%", "position": "original"},
        {"position": "0% 100%"},
        {"bg_blur": "12"},
        {"background": BACKGROUND},
    ],
)
def test_each_canvas_option_changes_the_key_and_round_trips(changed):
    options = OutputOptions.parse(**changed)
    assert options.key() != OutputOptions().key()
    again = OutputOptions.from_dict(options.to_dict())
    assert again == options and again.key() == options.key()
    assert again.background is None  # the upload's bytes never travel in task arguments


def test_a_background_image_is_keyed_by_its_content():
    other = cv2.imencode(".png", np.full((8, 8, 3), 91, np.uint8))[1].tobytes()
    first, second = OutputOptions.parse(background=BACKGROUND), OutputOptions.parse(background=other)
    assert first.bg_image and len(first.bg_image) == 64 and first.bg_image in first.key()
    assert first != second and first.key() != second.key()
    assert OutputOptions.parse(background=BACKGROUND) == first


@pytest.mark.parametrize(
    "mixed",
    [
        {"bg_color": "red", "bg_blur": "5"},
        {"bg_color": "red", "background": BACKGROUND},
        {"bg_blur": "5", "background": BACKGROUND},
    ],
)
def test_backgrounds_are_exclusive(mixed):
    with pytest.raises(InputError, match="exclusive"):
        OutputOptions.parse(**mixed)


def test_jpeg_is_flattened_onto_the_backdrop_not_white_and_a_matte_has_none():
    assert OutputOptions.parse("jpg", bg_blur="5").bg_color is None
    assert OutputOptions.parse("jpg", background=BACKGROUND).bg_color is None
    matte = OutputOptions.parse(alpha_only="true", bg_blur="5", crop="true")
    assert matte.bg_blur == 0 and matte.bg_image is None and matte.crop


def test_task_arguments_naming_no_stored_key_are_refused():
    with pytest.raises(InputError, match="bg_image"):
        OutputOptions.from_dict({"format": "png", "bg_image": "../../etc/passwd"})


# ------------------------------------------------------------------ the canvas, drawn


def disc_photo(height=200, width=300, centre=(150, 100), radius=40) -> tuple[np.ndarray, np.ndarray]:
    """A grey photo and the matte of a disc on it, with a few specks the crop must ignore."""
    rgb = np.full((height, width, 3), 60, np.uint8)
    cv2.circle(rgb, centre, radius, (220, 40, 40), -1)
    alpha = np.zeros((height, width), np.uint8)
    cv2.circle(alpha, centre, radius, 255, -1)
    alpha[3:5, 3:5] = 255  # a 4 px speck in the corner
    alpha[190:192, 290:292] = 200
    return rgb, alpha


def test_the_subjects_box_ignores_specks_and_faint_haze():
    rgb, alpha = disc_photo()
    alpha[:, :] = np.maximum(alpha, 5)  # a haze over everything, under VISIBLE
    assert layout.subject_box(alpha) == (110, 60, 191, 141)
    assert layout.subject_box(np.zeros((50, 50), np.uint8)) is None


def test_the_box_of_a_large_matte_found_on_a_small_copy_is_exact():
    alpha = np.zeros((3000, 4000), np.uint8)
    cv2.ellipse(alpha, (1700, 1400), (900, 1100), 15, 0, 360, 255, -1)
    cv2.circle(alpha, (3100, 700), 60, 180, -1)  # a second part of the subject, kept
    alpha[2990:2994, 10:14] = 255  # a speck: 16 px, well under 0.02% of 12 MP
    alpha[100:103, 3900:3903] = 255
    visible = (alpha >= layout.VISIBLE).view(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(visible, connectivity=8)
    big = stats[1:count][stats[1:count, cv2.CC_STAT_AREA] >= layout.SPECK_SHARE * alpha.size]
    expected = (
        big[:, 0].min(),
        big[:, 1].min(),
        (big[:, 0] + big[:, 2]).max(),
        (big[:, 1] + big[:, 3]).max(),
    )
    assert layout.subject_box(alpha) == tuple(int(v) for v in expected)


def drawn(rgb, alpha, **options):
    out_rgb, out_alpha, backdrop = draw(rgb.copy(), alpha, None, OutputOptions.parse(**options, **NO_EDGES))
    return out_rgb, out_alpha, backdrop


def test_a_crop_holds_exactly_the_subject():
    rgb, alpha = disc_photo()
    _, out, _ = drawn(rgb, alpha, crop="true")
    assert out.shape == (81, 81)
    assert out[0].any() and out[-1].any() and out[:, 0].any() and out[:, -1].any()  # it touches each side
    assert int(out.sum()) == int(alpha[60:141, 110:191].sum())


def test_a_margin_is_added_in_px_or_in_percent_of_the_subject_and_may_pass_the_border():
    rgb, alpha = disc_photo(centre=(45, 100))  # 5 px from the left border
    _, out, _ = drawn(rgb, alpha, crop="true", crop_margin="20px")
    assert out.shape == (121, 121)
    assert not out[:, :20].any() and out[:, 20].any()  # 15 of those 20 px lie past the photo: clear
    _, out, _ = drawn(rgb, alpha, crop="true", crop_margin="10% 50%")
    assert out.shape == (81 + 2 * 8, 81 + 2 * 40)


def test_an_empty_matte_with_a_crop_is_a_clear_failure():
    rgb, _ = disc_photo()
    specks_only = np.zeros(rgb.shape[:2], np.uint8)
    specks_only[3:5, 3:5] = 255
    with pytest.raises(InputError) as caught:
        drawn(rgb, specks_only, crop="true")
    assert caught.value.code == ErrorCode.EMPTY_SUBJECT
    _, out, _ = drawn(rgb, specks_only, scale="50%")  # nothing to move: the frame as it was
    assert out.shape == specks_only.shape


def test_scale_and_position_place_the_subjects_box():
    rgb, alpha = disc_photo()
    _, out, _ = drawn(rgb, alpha, scale="50%")  # the box fitted to half the canvas, centred
    assert out.shape == alpha.shape
    assert layout.subject_box(out) == (100, 50, 200, 150)
    _, out, _ = drawn(rgb, alpha, position="0% 100%")  # unscaled, to the bottom-left corner
    assert layout.subject_box(out) == (0, 119, 81, 200)
    assert not out[3:5, 3:5].any()  # only the subject's box moves: the specks outside it stay behind
    _, out, _ = drawn(rgb, alpha, crop="true", crop_margin="10px", position="100% 50%")
    assert out.shape == (101, 101) and layout.subject_box(out) == (20, 10, 101, 91)


def test_size_shrinks_the_drawn_canvas_last():
    rgb, alpha = disc_photo(height=1000, width=1500, centre=(750, 500), radius=200)
    out_rgb, out, _ = drawn(rgb, alpha, size="preview")
    assert out.size <= 250_000 and out.shape == (408, 612) and out_rgb.shape == (408, 612, 3)
    _, out, _ = drawn(rgb, alpha, size="200px", crop="true")
    assert out.shape == (200, 200)


def test_a_shrunk_edge_takes_no_colour_from_the_clear_pixels_around_it():
    rgb = np.zeros((64, 64, 3), np.uint8)  # black where the matte is clear
    rgb[:, 32:] = (250, 250, 250)
    alpha = np.zeros((64, 64), np.uint8)
    alpha[:, 32:] = 255
    out_rgb, out_alpha = layout.resize(rgb, alpha, (21, 21), cv2.INTER_AREA)
    edge = out_alpha > 0
    assert out_alpha[:, 10].min() < 255 and out_rgb[edge].min() >= 240  # a soft edge, still white (not 125)


def test_a_background_image_covers_the_canvas():
    wide = np.zeros((100, 400, 3), np.uint8)
    wide[:, 150:250] = 255  # a white band in the middle: what cover keeps
    covered = cover(wide, 50, 100)
    assert covered.shape == (100, 50, 3) and covered.min() == 255
    assert cover(wide, 400, 100) is not wide and np.array_equal(cover(wide, 400, 100), wide)


def test_the_blurred_photo_stays_aligned_behind_a_crop():
    rgb, alpha = disc_photo()
    rgb[:, :150] = (0, 0, 200)  # the photo's left half blue, its right half grey
    blurred = Blurred(rgb, 4)
    the_plan = layout.plan(alpha, OutputOptions(crop=True))
    behind = blurred.draw(the_plan, the_plan.width, the_plan.height)
    assert behind.shape == (81, 81, 3)
    assert behind[40, 5, 2] > 180 and behind[40, 75, 2] < 90  # blue at the crop's left, grey at its right
    full = blurred.draw(layout.Plan(300, 200, (0, 0)), 300, 200)
    assert np.abs(full.astype(int) - cv2.GaussianBlur(rgb, (0, 0), 4).astype(int)).mean() < 3


def test_a_jpeg_is_flattened_onto_the_backdrop():
    rgb, alpha = disc_photo()
    under = np.full_like(rgb, (10, 200, 10))
    options = OutputOptions.parse("jpg", background=BACKGROUND)
    data = encode(rgb, alpha, options, backdrop=under)
    out = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    assert np.abs(out[5, 150].astype(int) - (10, 200, 10)).max() < 12  # the backdrop where the matte is clear
    assert np.abs(out[100, 150].astype(int) - (220, 40, 40)).max() < 12  # the subject where it is opaque


# ------------------------------------------------------------------ on real photos, with the real ISNet


@pytest.fixture(scope="module")
def isnet(real_model_path):
    from cvunet_matting.config import load_settings
    from cvunet_matting.model.session import MattingSession, resolve_model

    settings = load_settings({"CVUNET_MODEL_DIR": str(real_model_path.parent), "CVUNET_DEVICE": "cpu"})
    return MattingSession(*resolve_model(settings), settings), settings


def as_png(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))[1].tobytes()


def read(data: bytes) -> np.ndarray:
    """RGB or RGBA, as written."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def centred_cup():
    """skimage's coffee cut to 555 px wide: the cup and saucer (x 70-485) centred, 70 px either side."""
    from skimage import data

    return data.coffee()[:, :555].copy()


_MADE: dict = {}


def made(isnet, rgb, **options):
    """The worker's own function (matting.matte_bytes) on `rgb`; each photo and options made once."""
    from cvunet_matting.image.matting import matte_bytes

    session, settings = isnet
    key = (rgb.tobytes(), rgb.shape, tuple(sorted(options.items())))
    if key not in _MADE:
        parsed = OutputOptions.parse(**options)
        _MADE[key] = matte_bytes(as_png(rgb), parsed, session, settings, background=parsed.background)
    return _MADE[key]


def test_crop_bounds_on_a_centred_subject(isnet, centred_cup):
    full = read(made(isnet, centred_cup).data)[..., 3]
    result = made(isnet, centred_cup, crop="true")
    cropped = read(result.data)
    x0, y0, x1, y1 = layout.subject_box(full)
    # the saucer's rim, read off the photo: 70 px from either side, the cup's handle inside
    assert 55 <= x0 <= 85 and 470 <= x1 <= 500 and y0 <= 30 and y1 >= 385
    assert abs(x0 - (555 - x1)) <= 15  # centred
    assert (result.width, result.height) == (x1 - x0, y1 - y0) == cropped.shape[1::-1]
    assert np.array_equal(cropped[..., 3], full[y0:y1, x0:x1])  # a window onto the very same cut-out


def test_crop_margin_on_a_real_photo(isnet, centred_cup):
    x0, y0, x1, y1 = layout.subject_box(read(made(isnet, centred_cup).data)[..., 3])
    width, height = x1 - x0, y1 - y0
    out = read(made(isnet, centred_cup, crop="true", crop_margin="10%").data)[..., 3]
    top, side = round(height * 0.1), round(width * 0.1)
    assert out.shape == (height + 2 * top, width + 2 * side)
    assert out[:, :side].mean() < 8 and out[:, -side:].mean() < 8 and out[-top:].mean() < 8
    out = read(made(isnet, centred_cup, crop="true", crop_margin="25px 0px").data)[..., 3]
    assert out.shape == (height + 50, width)


def test_size_preview_and_a_longest_side_on_a_real_photo(isnet):
    from skimage import data

    astronaut = data.astronaut()  # 512 x 512: 0.26 MP, just over preview's 0.25
    full = read(made(isnet, astronaut).data)
    preview = read(made(isnet, astronaut, size="preview").data)
    assert preview.shape == (500, 500, 4)
    side = made(isnet, astronaut, size="256px")
    small = read(side.data)
    assert (side.width, side.height) == (256, 256) and small.shape == (256, 256, 4)
    shrunk = cv2.resize(full[..., 3], (256, 256), interpolation=cv2.INTER_AREA)
    assert np.abs(small[..., 3].astype(int) - shrunk).mean() < 1  # the same cut-out, smaller


def test_scale_and_position_on_a_real_photo(isnet, centred_cup):
    result = made(isnet, centred_cup, scale="50%", position="0% 0%")
    out = read(result.data)[..., 3]
    assert out.shape == centred_cup.shape[:2]  # the canvas is the photo's frame
    x0, y0, x1, y1 = layout.subject_box(out)
    assert x0 <= 2 and y0 <= 2  # in the top-left corner
    assert abs((y1 - y0) - 200) <= 4  # the subject's box, 384 px tall, fitted to half of the 400 px canvas
    centred = layout.subject_box(read(made(isnet, centred_cup, scale="50%").data)[..., 3])
    assert abs((centred[0] + centred[2]) / 2 - 555 / 2) <= 3 and abs((centred[1] + centred[3]) / 2 - 200) <= 3


def test_a_background_image_behind_a_real_cut_out(isnet, centred_cup):
    from skimage import data

    astronaut = data.astronaut()
    alpha = read(made(isnet, centred_cup).data)[..., 3]
    result = made(isnet, centred_cup, format="jpg", background=as_png(astronaut))
    out = read(result.data)
    assert out.shape == centred_cup.shape  # JPEG: flattened, no alpha
    behind = cover(astronaut, 555, 400)
    clear, opaque = alpha == 0, alpha == 255
    assert clear.mean() > 0.2 and opaque.mean() > 0.2
    assert np.abs(out[clear].astype(int) - behind[clear]).mean() < 6  # the astronaut where the cup is not
    assert np.abs(out[opaque].astype(int) - centred_cup[opaque]).mean() < 6  # the cup where it is


def test_the_blurred_photo_behind_a_real_cut_out(isnet, centred_cup):
    alpha = read(made(isnet, centred_cup).data)[..., 3]
    out = read(made(isnet, centred_cup, bg_blur="15").data)
    assert out.shape == centred_cup.shape  # flattened: the backdrop fills every pixel
    clear, opaque = alpha == 0, alpha == 255
    blurred = cv2.GaussianBlur(centred_cup, (0, 0), 15, borderType=cv2.BORDER_REFLECT_101)
    assert np.abs(out[clear].astype(int) - blurred[clear]).mean() < 4  # the photo, blurred, behind
    assert np.abs(out[clear].astype(int) - centred_cup[clear]).mean() > 8  # ...and visibly blurred
    assert np.abs(out[opaque].astype(int) - centred_cup[opaque]).mean() < 6  # the subject sharp


def test_a_photo_with_no_subject_fails_a_crop_as_empty_subject(isnet):
    grey = np.full((300, 400, 3), 128, np.uint8)  # the real ISNet finds nothing in it
    with pytest.raises(InputError) as caught:
        made(isnet, grey, crop="true")
    assert caught.value.code == ErrorCode.EMPTY_SUBJECT
    assert made(isnet, grey).width == 400  # without a crop, the empty cut-out is a result as before


# ------------------------------------------------------------------ the command line


def test_the_matte_command_takes_the_canvas_flags(tmp_path, tiny_model):
    """CVUNET_MODEL is the tiny model here (conftest): its matte is the photo's brightness."""
    from click.testing import CliRunner

    from cvunet_matting.commands.cli import main

    photo = np.full((60, 90, 3), 0, np.uint8)
    cv2.rectangle(photo, (30, 20), (49, 39), (255, 255, 255), -1)  # a 20 x 20 white square, off-centre
    source, behind = tmp_path / "in.png", tmp_path / "behind.png"
    source.write_bytes(cv2.imencode(".png", photo)[1].tobytes())
    behind.write_bytes(cv2.imencode(".png", np.full((10, 10, 3), (0, 0, 200), np.uint8))[1].tobytes())
    flags = ["--crop", "--crop-margin", "5px", "--bg-image", str(behind), "--format", "jpg", "--no-refine"]
    done = CliRunner().invoke(main, ["matte", str(source), "-o", str(tmp_path / "out"), *flags])
    assert done.exit_code == 0, done.output
    out = cv2.imread(str(tmp_path / "out" / "in.jpg"))
    assert out.shape == (30, 30, 3)  # the square and 5 px all round
    assert abs(int(out[1, 1, 2]) - 200) < 25 and out[15, 15].min() > 200  # red behind, the white square
    done = CliRunner().invoke(main, ["matte", str(source), "-o", str(tmp_path / "bad"), "--position", "left"])
    assert done.exit_code == 1 and "position" in done.output
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    done = CliRunner().invoke(
        main, ["matte", str(source), "-o", str(tmp_path / "bad"), "--bg-image", str(not_an_image)]
    )
    assert done.exit_code != 0 and "Traceback" not in done.output
