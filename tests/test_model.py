"""The model: the real ISNet on real photos, the CV-UNet-shaped path on a tiny graph, provider choice."""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest

from cvunet_matting.config import load_settings
from cvunet_matting.errors import DeviceError, ModelError
from cvunet_matting.model.manifest import Manifest, builtin
from cvunet_matting.model.providers import CPU, CUDA, TENSORRT, choose_providers, provider_names
from cvunet_matting.model.session import MattingSession, cpu_memory_plan, model_input, resolve_model
from cvunet_matting.resize import shrink, shrink_for_model

# (subject boxes, background boxes) as (x0, y0, x1, y1), read off the photos by eye.
EXPECTED = {
    "astronaut": ([(170, 30, 280, 140), (60, 330, 250, 480)], [(380, 0, 512, 200), (0, 0, 100, 250)]),
    "chelsea": ([(100, 60, 300, 250)], [(400, 40, 451, 200)]),
    "coffee": ([(150, 100, 400, 300)], [(0, 0, 60, 100), (530, 300, 600, 400)]),
}


@pytest.fixture(scope="module")
def isnet(real_model_path):
    settings = load_settings({"CVUNET_MODEL_DIR": str(real_model_path.parent), "CVUNET_DEVICE": "cpu"})
    path, manifest = resolve_model(settings)
    return MattingSession(path, manifest, settings)


@pytest.mark.model
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_isnet_separates_subject_from_background(isnet, name):
    from skimage import data

    rgb = getattr(data, name)()
    alpha = isnet.predict_alpha(rgb) / 255.0
    assert alpha.shape == rgb.shape[:2]
    subjects, backgrounds = EXPECTED[name]
    for x0, y0, x1, y1 in subjects:
        assert alpha[y0:y1, x0:x1].mean() > 0.85, f"{name}: subject box {(x0, y0, x1, y1)} not opaque"
    for x0, y0, x1, y1 in backgrounds:
        assert alpha[y0:y1, x0:x1].mean() < 0.15, f"{name}: background box {(x0, y0, x1, y1)} not clear"


@pytest.mark.model
def test_isnet_in_float32_gives_the_fp16_graphs_matte_within_a_level(isnet, real_model_path):
    """The CPU session runs ISNet's fp16 graph widened to float32 and without its five side outputs
    (graph_edit.py); the matte is the one the graph as exported gives, to within rounding."""
    from skimage import data

    env = {"CVUNET_MODEL_DIR": str(real_model_path.parent), "CVUNET_DEVICE": "cpu", "CVUNET_CPU_FLOAT32": "0"}
    settings = load_settings(env)
    as_exported = MattingSession(*resolve_model(settings), settings)
    assert [o.name for o in isnet.session.get_outputs()] == ["output"]
    rgb = data.astronaut()
    difference = np.abs(isnet.predict_alpha(rgb).astype(int) - as_exported.predict_alpha(rgb))
    assert difference.max() <= 1 and np.count_nonzero(difference) < 0.01 * difference.size


def see_through_share(alpha: np.ndarray) -> float:
    """Issue #27's figure: the share of the matte's non-zero pixels left partly transparent (12-243)."""
    return np.count_nonzero((alpha >= 12) & (alpha <= 243)) / np.count_nonzero(alpha)


@pytest.fixture(scope="module")
def cat_and_astronaut(isnet) -> dict:
    """Issue #27's photos and the real ISNet's raw mattes of them: name -> (rgb, raw alpha)."""
    from skimage import data

    return {
        name: (rgb, isnet.predict_alpha(rgb)) for name in ("chelsea", "astronaut") for rgb in [getattr(data, name)()]
    }


@pytest.mark.model
def test_the_defaults_make_the_cat_solid_and_keep_the_astronauts_hair_soft(cat_and_astronaut):
    """The close-up cat's coat came back at alpha 0.6-0.9 (42-45% of its matte partly transparent);
    solidify's default makes it solid, and the portrait keeps the soft edge of its hair."""
    from cvunet_matting.image.edges import finish
    from cvunet_matting.image.encoding import OutputOptions

    shares = {}
    for name, (rgb, raw) in cat_and_astronaut.items():
        shares[name] = {
            label: see_through_share(finish(rgb.copy(), raw, None, options)[1])
            for label, options in (("defaults", OutputOptions()), ("off", OutputOptions(solidify=False)))
        }
    assert shares["chelsea"]["defaults"] <= 0.10 < 0.30 < shares["chelsea"]["off"], shares
    assert 0.01 <= shares["astronaut"]["defaults"] <= 0.08, shares


@pytest.mark.model
def test_the_confidence_score_flags_the_see_through_cat_and_not_the_astronaut(cat_and_astronaut):
    from cvunet_matting.image.confidence import confidence, is_doubtful

    scores = {name: confidence(raw) for name, (_, raw) in cat_and_astronaut.items()}
    assert is_doubtful(scores["chelsea"]) and not is_doubtful(scores["astronaut"]), scores
    assert scores["chelsea"] < 0.7 and scores["astronaut"] > 0.95, scores


@pytest.mark.model
def test_isnet_manifest_version_is_the_file_hash(isnet, real_model_path):
    from cvunet_matting.model.manifest import sha256_file

    assert isnet.version == sha256_file(real_model_path)
    assert isnet.providers[-1] == CPU


def test_tiny_cvunet_model_is_fed_hwc_and_read_as_rgba(tiny_model):
    settings = load_settings({"CVUNET_MODEL": str(tiny_model)})
    path, manifest = resolve_model(settings)
    assert manifest is None  # no JSON beside it: guessed from the input name
    session = MattingSession(path, manifest, settings)
    assert session.manifest.name == "cvunet"
    rgb = np.zeros((37, 53, 3), np.uint8)
    rgb[:, 30:] = 255
    alpha = session.predict_alpha(rgb)
    assert alpha.shape == (37, 53)
    assert alpha[:, :30].max() == 0 and alpha[:, 30:].min() == 255


@pytest.mark.parametrize(("env", "spinning"), [({}, "0"), ({"CVUNET_INTRA_SPIN": "1"}, "1")])
def test_inference_threads_spin_only_when_asked(tiny_model, env, spinning):
    settings = load_settings({"CVUNET_MODEL": str(tiny_model), **env})
    session = MattingSession(*resolve_model(settings), settings)
    options = session.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == spinning


@pytest.mark.parametrize(("env", "arena"), [({}, True), ({"CVUNET_CPU_ARENA": "0"}, False)])
def test_a_cpu_worker_keeps_the_arena_without_the_pattern_block_unless_told(tiny_model, env, arena):
    settings = load_settings({"CVUNET_MODEL": str(tiny_model), **env})
    session = MattingSession(*resolve_model(settings), settings)
    options = session.session.get_session_options()
    # The arena and the memory-pattern block together held ~2.1 GB with ISNet: never both.
    assert (options.enable_cpu_mem_arena, options.enable_mem_pattern) == (arena, not arena)


@pytest.mark.parametrize("provider", ["CUDAExecutionProvider", "TensorrtExecutionProvider"])
@pytest.mark.parametrize("keep", [True, False])
def test_a_gpu_session_keeps_its_lean_host_memory_whatever_the_setting(provider, keep):
    assert cpu_memory_plan(keep, provider) == (False, True)


def test_manifest_round_trip_and_validation():
    manifest = builtin("isnet-fp16")
    assert Manifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest
    with pytest.raises(ModelError, match="layout"):
        Manifest.from_dict({**manifest.to_dict(), "input": {**manifest.to_dict()["input"], "layout": "NHWC"}})
    with pytest.raises(ModelError, match="missing"):
        Manifest.from_dict({"name": "x"})
    versioned = replace(manifest, version="abc")
    assert versioned != manifest and Manifest.from_dict(versioned.to_dict()).version == "abc"  # kept on the way


def test_missing_model_says_how_to_fetch(tmp_path):
    with pytest.raises(ModelError, match="model fetch"):
        resolve_model(load_settings({"CVUNET_MODEL_DIR": str(tmp_path)}))
    with pytest.raises(ModelError, match="no such file"):
        resolve_model(load_settings({"CVUNET_MODEL": str(tmp_path / "nope.onnx")}))


@pytest.mark.parametrize(
    ("available", "device", "trt", "expected"),
    [
        ([CPU], "auto", False, [CPU]),
        ([CUDA, CPU], "auto", False, [CUDA, CPU]),
        ([CUDA, CPU], "cpu", False, [CPU]),
        ([TENSORRT, CUDA, CPU], "auto", True, [TENSORRT, CUDA, CPU]),
        ([TENSORRT, CUDA, CPU], "cuda", False, [CUDA, CPU]),
    ],
)
def test_provider_choice(available, device, trt, expected):
    assert provider_names(choose_providers(available, device, trt)) == expected


def test_cuda_required_but_absent_is_a_loud_error():
    with pytest.raises(DeviceError, match="onnxruntime-gpu"):
        choose_providers([CPU], "cuda", False)
    with pytest.raises(DeviceError, match="auto, cpu or cuda"):
        choose_providers([CPU], "gpu", False)


def test_cuda_options_bound_memory():
    (_, options), _ = choose_providers([CUDA, CPU], "auto", False, mem_limit_mb=512)
    assert options["arena_extend_strategy"] == "kSameAsRequested"
    assert options["gpu_mem_limit"] == 512 * 1024 * 1024
    assert options["cudnn_conv_algo_search"] == "HEURISTIC"


@pytest.mark.parametrize("size", [(4000, 3000), (4001, 2999), (2100, 2100)])
def test_two_step_shrink_averages_like_a_direct_area_resize(size):
    from skimage import data

    image = cv2.resize(data.astronaut(), size, interpolation=cv2.INTER_CUBIC)
    shrunk = shrink(image, 1024, 1024)
    direct = cv2.resize(image, (1024, 1024), interpolation=cv2.INTER_AREA)
    assert shrunk.shape == direct.shape
    # Within a grey level on average; sharp edges move by under half a pixel (an odd edge row is dropped).
    assert np.abs(shrunk.astype(int) - direct).mean() < 1.0


def test_shrink_of_a_small_image_is_the_plain_resize():
    image = np.random.default_rng(3).integers(0, 256, (1500, 1200, 3), dtype=np.uint8)
    expected = cv2.resize(image, (1024, 1024), interpolation=cv2.INTER_AREA)
    assert np.array_equal(shrink(image, 1024, 1024), expected)


@pytest.mark.parametrize("size", [(1600, 1200), (1080, 1920), (1024, 2047)])
def test_the_model_input_within_twice_its_side_is_bilinear_and_near_the_area_average(size):
    from skimage import data

    image = cv2.resize(data.astronaut(), size, interpolation=cv2.INTER_CUBIC)
    quick = shrink_for_model(image, 1024, 1024)
    assert np.array_equal(quick, cv2.resize(image, (1024, 1024), interpolation=cv2.INTER_LINEAR))
    assert np.abs(quick.astype(int) - shrink(image, 1024, 1024)).mean() < 0.5  # measured 0.17-0.22


@pytest.mark.parametrize("size", [(2048, 1200), (1600, 2048), (4000, 3000), (640, 480), (1224, 816)])
def test_the_model_input_otherwise_is_the_area_shrink(size):
    image = np.random.default_rng(4).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    assert np.array_equal(shrink_for_model(image, 1024, 1024), shrink(image, 1024, 1024))


@pytest.mark.parametrize("color", ["RGB", "BGR"])
def test_the_float_input_is_the_normalised_image_transposed_bit_for_bit(color):
    """model_input builds the NCHW tensor a plane at a time: the same float32 numbers as normalising
    the whole image and transposing it."""
    manifest = replace(
        builtin("isnet-fp16"), size=(48, 64), color=color, mean=(120.0, 5.5, 250.0), std=(57.0, 1.0, 3.25)
    )
    rgb = np.random.default_rng(5).integers(0, 256, (100, 90, 3), dtype=np.uint8)
    image = shrink_for_model(rgb if color == "RGB" else rgb[..., ::-1], 64, 48)
    expected = (image.astype(np.float32) - np.float32(manifest.mean)) / np.float32(manifest.std)
    tensor = model_input(rgb, manifest)
    assert tensor.shape == (1, 3, 48, 64) and tensor.dtype == np.float32 and tensor.flags.c_contiguous
    assert np.array_equal(tensor, expected.transpose(2, 0, 1)[None])


@pytest.fixture(scope="module")
def isnet_shaped(tmp_root):
    from tests.support import build_isnet_shaped_model

    path = build_isnet_shaped_model(tmp_root / "models" / "isnet-shaped.onnx", size=64)
    manifest = replace(builtin("isnet-fp16"), size=(64, 64))
    return path, manifest


def test_uint8_io_and_a_dynamic_batch_give_what_the_float_graph_gives(isnet_shaped):
    """The graph edits made at load: uint8 pixels in (normalised and transposed in the graph), uint8
    alpha out, batch dimension no longer fixed to 1; the same mattes as the host-side path."""
    path, manifest = isnet_shaped
    settings = load_settings({"CVUNET_DEVICE": "cpu"})
    plain = MattingSession(path, manifest, settings)
    edited = MattingSession(path, manifest, settings, uint8_io=True, dynamic_batch=True)
    assert edited.batched and not plain.batched and edited.version == plain.version
    assert edited.session.get_inputs()[0].type == "tensor(uint8)"
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (90, 70, 3), dtype=np.uint8) for _ in range(3)]
    tensors = [edited.preprocess(i) for i in images]
    assert tensors[0].dtype == np.uint8 and tensors[0].shape == (1, 64, 64, 3)
    outputs = edited.infer_batch(tensors)
    for image, raw in zip(images, outputs, strict=True):
        assert raw.dtype == np.uint8
        expected = plain.predict_alpha(image)
        got = edited.postprocess(raw, *image.shape[:2])
        assert np.abs(got.astype(int) - expected).max() <= 1


def test_an_any_size_model_takes_uint8_and_runs_one_image_at_a_time(tiny_model):
    settings = load_settings({"CVUNET_MODEL": str(tiny_model)})
    path, manifest = resolve_model(settings)
    plain = MattingSession(path, manifest, settings)
    edited = MattingSession(path, manifest, settings, uint8_io=True, dynamic_batch=True)
    assert not edited.batched
    images = [np.random.default_rng(s).integers(0, 256, (20 + s, 30, 3), dtype=np.uint8) for s in range(2)]
    outputs = edited.infer_batch([edited.preprocess(i) for i in images])
    for image, raw in zip(images, outputs, strict=True):
        assert np.array_equal(edited.postprocess(raw, *image.shape[:2]), plain.predict_alpha(image))


def test_tensorrt_engines_are_cached_on_the_shared_volume(tmp_path):
    (trt, _), *_ = choose_providers([TENSORRT, CUDA, CPU], "auto", True, engine_cache=tmp_path / "trt")
    assert trt == TENSORRT
    options = choose_providers([TENSORRT, CUDA, CPU], "auto", True, engine_cache=tmp_path / "trt")[0][1]
    assert options["trt_engine_cache_path"] == str(tmp_path / "trt") and options["trt_timing_cache_enable"]
