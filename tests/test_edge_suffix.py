"""The edge steps as an ONNX suffix of the model (model/edge_suffix.py) against the CPU path.

The tolerance, against the CPU functions as imported now (so a faster CPU path of the same math is held
to the same figures). Colours are compared premultiplied by their alpha (what any composite shows: an
invisible pixel's colour is no difference). On every photo and each set of options:
- the raw matte: within 2 levels everywhere, mean difference at most 0.2 level (OpenCV's uint8
  bilinear upscale rounds its own way, a level off on up to 13% of pixels; the suffix rounds the exact
  bilinear value);
- the cut-out from the same raw matte (the CPU's edge steps on the suffix's raw matte, as a re-render
  from the stored matte gives): alpha and colours within 2 levels on 99.9% of pixels, mean at most 0.1;
- the cut-out against the CPU path from its own raw matte: within 2 levels on 99%, mean at most 0.2
  (where the raw mattes differ by a level at the 0.5 contour, solidify's distance maps move by a copy
  pixel: up to ~50 levels there, on under 0.2% of pixels).
Measured (ISNet and a brightness matte, 4 photos): raw mean <= 0.13; same raw >= 99.96%, mean <= 0.013
(0.073 on the tall brightness photo against edge-speed's cheaper steps, whose bilinear matte copies
OpenCV rounds its own way: hence 0.1);
CPU raw >= 99.81% with the defaults (ISNet: 99.99%), 99.49% with refine off and solidify on (the
brightness matte is soft all over: every raw difference reaches the contour), mean <= 0.13.
"""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest

from cvunet_matting.config import load_settings
from cvunet_matting.image import edges
from cvunet_matting.image.device_finish import edge_math, finish_from_device
from cvunet_matting.image.edges import finish
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.model import edge_taps as taps
from cvunet_matting.model.edge_suffix import (
    ALPHA,
    FLAGS,
    FOREGROUND,
    MATTE,
    PHOTO,
    RAW,
    edges_wanted,
    plan,
    suffix_only_model,
)
from cvunet_matting.model.providers import CPU, CUDA, TENSORRT
from cvunet_matting.model.session import MattingSession
from cvunet_matting.pipeline.submission import Item, submit_image
from cvunet_matting.storage.files import raw_matte_path
from tests.support import build_brightness_model, wait_task

DEFAULTS = OutputOptions()


def photos() -> dict[str, np.ndarray]:
    from skimage import data

    astronaut, chelsea = data.astronaut(), data.chelsea()
    return {
        "astronaut": astronaut,
        "chelsea": chelsea,
        # Tall and larger than the working copies: every shrink and upscale is exercised.
        "non-square": cv2.resize(astronaut[:, 96:400], (700, 1180), interpolation=cv2.INTER_CUBIC),
        "tiny": cv2.resize(chelsea, (23, 17), interpolation=cv2.INTER_AREA),
    }


def level_differences(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    return np.abs(ours.astype(np.int16) - theirs.astype(np.int16))


def assert_close(ours: np.ndarray, theirs: np.ndarray, levels: int, share: float, mean: float | None = None) -> None:
    diff = level_differences(ours, theirs)
    within = np.mean(diff <= levels)
    assert within >= share, f"{100 * within:.4f}% within {levels} levels (max {diff.max()}), wanted {100 * share}%"
    if mean is not None:
        assert diff.mean() <= mean, f"mean difference {diff.mean():.4f} levels"


def premultiplied(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return np.round(rgb.astype(np.float32) * alpha[..., None] / 255).astype(np.uint8)


def assert_matches_cpu(
    rgb: np.ndarray, plain: MattingSession, suffixed: MattingSession, options: OutputOptions = DEFAULTS
) -> None:
    """The suffix path's raw matte and cut-out against the CPU path's, by the module's tolerance."""
    raw = plain.predict_alpha(rgb)
    done = suffixed.predict_edges(rgb, options.refine, options.solidify)
    assert level_differences(done.raw, raw).max() <= 2
    assert level_differences(done.raw, raw).mean() <= 0.2
    dev_rgb, dev_alpha = finish_from_device(rgb.copy(), done, None, options)
    assert dev_rgb.shape == rgb.shape and dev_rgb.dtype == np.uint8 and dev_alpha.shape == rgb.shape[:2]
    # From the same raw matte: 99.8% within 2 levels (99.898% measured on the tall brightness photo after
    # edge-speed's merge; the outliers are solidify's contour moving by one copy pixel).
    for cpu_raw, share, mean in ((done.raw, 0.998, 0.1), (raw, 0.99, 0.2)):
        cpu_rgb, cpu_alpha = finish(rgb.copy(), cpu_raw, None, options)
        assert_close(dev_alpha, cpu_alpha, 2, share, mean)
        assert_close(premultiplied(dev_rgb, dev_alpha), premultiplied(cpu_rgb, cpu_alpha), 2, share, mean)


# --- the host's plan follows OpenCV (unit tier) ------------------------------------------------------


def applied(image: np.ndarray, rows: taps.Taps, cols: taps.Taps) -> np.ndarray:
    return taps.apply(taps.apply(image.astype(np.float64), rows, 0), cols, 1)


@pytest.mark.parametrize(("src", "dst"), [((1024, 1024), (300, 451)), ((384, 512), (1200, 1600)), ((7, 9), (20, 33))])
def test_linear_and_nearest_taps_are_opencvs(src, dst):
    image = np.random.default_rng(1).random(src).astype(np.float32)
    linear = applied(image, taps.linear(src[0], dst[0]), taps.linear(src[1], dst[1]))
    assert (
        np.abs(linear - cv2.resize(image, dst[::-1], interpolation=cv2.INTER_LINEAR)).max() < 1e-4
    )  # a 40th of a level
    near = applied(image, taps.nearest(src[0], dst[0]), taps.nearest(src[1], dst[1]))
    assert np.array_equal(near, cv2.resize(image, dst[::-1], interpolation=cv2.INTER_NEAREST))


@pytest.mark.parametrize(
    ("src", "dst"), [((1333, 1000), (1024, 768)), ((700, 500), (512, 366)), ((571, 428), (512, 384))]
)
def test_area_taps_are_opencvs(src, dst):
    image = cv2.GaussianBlur(np.random.default_rng(2).integers(0, 256, (*src, 3), dtype=np.uint8), (0, 0), 2)
    ours = np.round(applied(image, taps.area(src[0], dst[0]), taps.area(src[1], dst[1])))
    assert_close(ours, cv2.resize(image, dst[::-1], interpolation=cv2.INTER_AREA), 0, 0.999)
    floats = image.astype(np.float32) / 255  # a quarter by fx = fy = 0.25: the last cell cut short
    theirs = cv2.resize(floats, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    ours = applied(floats, taps.area(src[0], theirs.shape[0], 4.0), taps.area(src[1], theirs.shape[1], 4.0))
    assert np.abs(ours - theirs).max() < 1e-5


@pytest.mark.parametrize("shape", [(384, 512), (5, 3), (40, 30)])  # (5, 3): windows wider than the image
def test_box_taps_reflect_as_opencv_does(shape):
    image = np.random.default_rng(3).random(shape).astype(np.float32)
    rows, cols = shape
    ours = applied(image, taps.box(rows, 7, False), taps.box(cols, 7, False))
    assert np.abs(ours - cv2.boxFilter(image, -1, (7, 7), borderType=cv2.BORDER_REFLECT)).max() < 1e-5
    for size in (6, 22):
        ours = applied(image, taps.box(rows, size, True), taps.box(cols, size, True))
        assert np.abs(ours - cv2.blur(image, (size, size))).max() < 1e-5


# --- the setting (unit tier) --------------------------------------------------------------------------


def test_auto_puts_the_edges_on_a_gpu_provider_only_and_on_off_force_it():
    assert edges_wanted("auto", CUDA) and edges_wanted("auto", TENSORRT)
    assert not edges_wanted("auto", CPU)
    assert edges_wanted("on", CPU) and not edges_wanted("off", CUDA)
    assert load_settings({}).edges_on_device == "auto"
    assert load_settings({"CVUNET_EDGES_ON_DEVICE": "ON"}).edges_on_device == "on"


def test_the_suffix_follows_the_cpu_modules_numbers_as_they_are_now(monkeypatch):
    monkeypatch.setattr(edges, "SIDE", 640)
    assert edge_math().refine_side == 640


# --- a small alpha model, any photo (unit tier) -------------------------------------------------------


@pytest.fixture(scope="module")
def brightness_model(tmp_path_factory):
    return build_brightness_model(tmp_path_factory.mktemp("model"))


def sessions_of(path) -> tuple[MattingSession, MattingSession]:
    from cvunet_matting.model.manifest import Manifest

    manifest = Manifest.from_dict(json.loads(path.with_suffix(".json").read_text()))
    plain = MattingSession(path, manifest, load_settings({"CVUNET_DEVICE": "cpu", "CVUNET_EDGES_ON_DEVICE": "off"}))
    forced = load_settings({"CVUNET_DEVICE": "cpu", "CVUNET_EDGES_ON_DEVICE": "on"})
    return plain, MattingSession(path, manifest, forced, edges=edge_math())


@pytest.fixture(scope="module")
def brightness_sessions(brightness_model):
    return sessions_of(brightness_model)


def test_auto_on_the_cpu_provider_loads_no_suffix(brightness_model):
    from cvunet_matting.model.manifest import Manifest

    manifest = Manifest.from_dict(json.loads(brightness_model.with_suffix(".json").read_text()))
    session = MattingSession(brightness_model, manifest, load_settings({"CVUNET_DEVICE": "cpu"}), edges=edge_math())
    assert not session.edges_on_device


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "non-square", "tiny"])
def test_the_suffix_matches_the_cpu_path_on_a_brightness_matte(brightness_sessions, name):
    assert_matches_cpu(photos()[name], *brightness_sessions)


@pytest.mark.parametrize(
    "options",
    [
        replace(DEFAULTS, refine=False),
        replace(DEFAULTS, solidify=False),
        replace(DEFAULTS, refine=False, solidify=False, decontaminate=False),
        replace(DEFAULTS, alpha_threshold=40, feather=2),  # controls: the colours estimated again on the host
        replace(DEFAULTS, erode=1, opaque_threshold=200),
    ],
)
def test_each_edge_option_gives_the_cpu_paths_cut_out(brightness_sessions, options):
    assert_matches_cpu(photos()["chelsea"], *brightness_sessions, options)


def test_the_suffix_alone_declares_the_lowest_ir_version_its_opset_needs():
    """The onnx package may be newer than the runtime: onnx 1.23 writes IR 14 by default, which
    onnxruntime-gpu 1.31 refuses (seen on an H100). The suffix's opset needs far less."""
    import onnx

    model = onnx.load_model_from_string(suffix_only_model((64, 48), edge_math()))
    assert model.ir_version == onnx.helper.find_min_ir_version_for(list(model.opset_import))


def test_the_suffix_alone_gives_what_the_appended_one_gives(brightness_sessions):
    """suffix_only_model (bench-edges times it; a batching device process would run it after its
    batch) fed the model's uint8 alpha: the very outputs of the model with the suffix appended."""
    import onnxruntime as ort

    plain, suffixed = brightness_sessions
    rgb = photos()["non-square"]
    plain_uint8 = MattingSession(plain.path, plain.manifest, load_settings({"CVUNET_DEVICE": "cpu"}), uint8_io=True)
    matte = plain_uint8.infer(plain_uint8.preprocess(rgb))
    alone = ort.InferenceSession(suffix_only_model((256, 256), edge_math()), providers=["CPUExecutionProvider"])
    feeds = plan(rgb.shape[:2], (256, 256), edge_math()) | {MATTE: matte, PHOTO: rgb, FLAGS: np.array([True, True])}
    outputs = alone.run([RAW, ALPHA, FOREGROUND], feeds)
    for ours, theirs in zip(outputs, suffixed.predict_edges(rgb, True, True), strict=True):
        assert np.array_equal(ours, theirs)


# --- the real model (ISNet) ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def isnet_sessions(real_model_path):
    return sessions_of(real_model_path)


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "non-square", "tiny"])
def test_the_suffix_matches_the_cpu_path_with_isnet(isnet_sessions, name):
    assert_matches_cpu(photos()[name], *isnet_sessions)


def test_a_worker_with_the_suffix_forced_on_writes_the_cut_out_and_its_raw_matte(
    clean_state, worker_factory, real_model_path
):
    """The whole worker path (tasks.matte_image, image_job, matte_bytes) on a CPU worker told to use
    the suffix: a valid cut-out, its raw matte beside it, and the two agree as a re-render would."""
    worker = worker_factory("cpu0@%h", CVUNET_MODEL="isnet-fp16", CVUNET_EDGES_ON_DEVICE="on")
    rgb = photos()["chelsea"]
    task_id = submit_image(Item("cat.png", cv2.imencode(".png", rgb[..., ::-1])[1].tobytes()), DEFAULTS)
    row = wait_task(task_id, timeout=300)
    output = load_settings().data_dir / row["output_path"]
    cut = cv2.imread(str(output), cv2.IMREAD_UNCHANGED)
    raw = cv2.imread(str(raw_matte_path(output)), cv2.IMREAD_UNCHANGED)
    assert cut.shape == (*rgb.shape[:2], 4) and raw.shape == rgb.shape[:2]
    assert "with the edge steps on the device" in worker.log_path.read_text()
    cpu_rgb, cpu_alpha = finish(rgb.copy(), raw, None, DEFAULTS)
    alpha, colours = cut[..., 3], cut[..., 2::-1]
    assert 0.05 < np.mean(alpha > 128) < 0.95  # a cat cut out, not an empty or a full matte
    assert_close(alpha, cpu_alpha, 2, 0.999, 0.05)
    assert_close(premultiplied(colours, alpha), premultiplied(cpu_rgb, cpu_alpha), 2, 0.999, 0.05)
