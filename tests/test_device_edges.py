"""The edge suffix in the overlapped worker's device process (worker/device_server.py, model/suffix_session.py):
a pool process's photo goes to the device process in the shared slot, after the model's input, and the
raw matte, the finished matte and the colours come back in it (device_protocol.edge_views).

Against the model with the suffix appended in one process (MattingSession.predict_edges, which
tests/test_edge_suffix.py holds to the CPU path): the same outputs, byte for byte, since both run the
same graphs on the CPU provider here (CVUNET_EDGES_ON_DEVICE=on forces the suffix there).
"""

from __future__ import annotations

import os
import threading

import cv2
import numpy as np
import pytest

from cvunet_matting.config import load_settings
from cvunet_matting.image.device_finish import edge_math
from cvunet_matting.image.edges import finish
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.model.session import MattingSession, resolve_model
from cvunet_matting.model.suffix_session import edge_suffix_for
from cvunet_matting.pipeline.submission import Item, submit_batch
from cvunet_matting.storage.files import raw_matte_path
from cvunet_matting.worker.device_client import DeviceRunError, RemoteSession
from cvunet_matting.worker.device_server import DeviceServer, serve
from tests import support
from tests.support import rows_of, wait_batch


def photos() -> dict[str, np.ndarray]:
    from skimage import data

    astronaut, chelsea = data.astronaut(), data.chelsea()
    return {
        "tiny": cv2.resize(chelsea, (23, 17), interpolation=cv2.INTER_AREA),
        "chelsea": chelsea,
        "tall": cv2.resize(astronaut[:, 96:400], (700, 1180), interpolation=cv2.INTER_CUBIC),
        "astronaut": astronaut,
    }


@pytest.fixture(scope="module")
def brightness(tmp_path_factory):
    return support.build_brightness_model(tmp_path_factory.mktemp("model"))


def model_settings(model, edges: str):
    return load_settings({"CVUNET_DEVICE": "cpu", "CVUNET_EDGES_ON_DEVICE": edges, "CVUNET_MODEL": str(model)})


def start_device(model, folder, edges: str = "on", max_batch: int = 2, wait_s: float = 0.0):
    """A device process's server, in threads of this process, on a real Unix socket; returns it and
    a function that connects a pool process's session to it."""
    settings = model_settings(model, edges)
    session = MattingSession(*resolve_model(settings), settings, uint8_io=True, dynamic_batch=max_batch > 1)
    server = DeviceServer(session, max_batch, wait_s, edge_suffix_for(session, settings, edge_math()))
    address, authkey = str(folder / "device.sock"), os.urandom(16)
    threading.Thread(target=serve, args=(address, authkey, server), daemon=True).start()
    return server, lambda: RemoteSession(address, authkey, connect_timeout=30)


def reference(model) -> MattingSession:
    """The model with the suffix appended, in one process: what a worker without a device process runs."""
    settings = model_settings(model, "on")
    return MattingSession(*resolve_model(settings), settings, edges=edge_math())


def assert_same(ours, theirs) -> None:
    for name, a, b in zip(("raw", "alpha", "foreground"), ours, theirs, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype == np.uint8, name
        assert np.array_equal(a, b), f"{name}: {np.count_nonzero(a != b)} pixels differ"


def test_the_device_process_runs_the_edge_steps_and_answers_in_the_slot(brightness, tmp_path):
    """Photos growing in size (the slot grows with them, handed over again), each option set, an image
    that must run alone, and a plain run beside them: each the appended suffix's outputs."""
    server, connect = start_device(brightness, tmp_path)
    remote, local = connect(), reference(brightness)
    assert remote.edges_on_device and server.suffix is not None
    for rgb in photos().values():
        for refine, solidify in ((True, True), (False, True), (True, False)):
            assert_same(remote.predict_edges(rgb, refine, solidify), local.predict_edges(rgb, refine, solidify))
    rgb = photos()["chelsea"]
    assert_same(remote.isolated().predict_edges(rgb, True, True), local.predict_edges(rgb, True, True))
    # A run that asks for no edges still gets the model's matte, upscaled by the pool process (OpenCV
    # rounds its own way: within 2 levels of the suffix's, test_edge_suffix's tolerance for the raw matte).
    upscaled = remote.predict_alpha(rgb).astype(np.int16)
    assert np.abs(upscaled - local.predict_edges(rgb, False, False).raw).max() <= 2


def test_photos_of_two_sizes_share_one_model_run_and_each_gets_its_own_edges(brightness, tmp_path):
    server, connect = start_device(brightness, tmp_path, max_batch=2, wait_s=2.0)
    local = reference(brightness)
    names = ["astronaut", "tall"]
    remotes = [connect() for _ in names]
    got: dict[str, object] = {}

    def one(name, remote):
        got[name] = remote.predict_edges(photos()[name], True, True)

    threads = [threading.Thread(target=one, args=pair) for pair in zip(names, remotes, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert server.stats() == {"runs": 1, "images": 2}  # one batch of the model for both photos
    for name in names:
        assert_same(got[name], local.predict_edges(photos()[name], True, True))


def test_with_the_suffix_off_the_pool_process_is_told_and_a_stray_edge_run_fails_alone(brightness, tmp_path):
    server, connect = start_device(brightness, tmp_path, edges="off")
    remote = connect()
    assert server.suffix is None and not remote.edges_on_device
    remote.edges = True  # a pool process that would ask anyway gets a clear error for that image
    with pytest.raises(DeviceRunError, match="runs no edge suffix"):
        remote.predict_edges(photos()["chelsea"], True, True)
    remote.edges = False
    assert remote.predict_alpha(photos()["chelsea"]).shape == photos()["chelsea"].shape[:2]  # the next image runs


@pytest.mark.parametrize("edges", ["auto", "off"])
def test_a_device_process_runs_the_suffix_only_when_told_on(brightness, edges):
    """`auto` is off in a device process, whatever the provider (suffix_session.edge_suffix_for: one
    suffix run at a time after each batch caps a GPU's rate below what the pool's cores give)."""
    settings = model_settings(brightness, edges)
    session = MattingSession(*resolve_model(settings), settings, uint8_io=True)
    assert edge_suffix_for(session, settings, edge_math()) is None
    on = model_settings(brightness, "on")
    assert edge_suffix_for(MattingSession(*resolve_model(on), on, uint8_io=True), on, edge_math()) is not None


@pytest.mark.services
def test_an_overlapped_worker_with_the_suffix_on_writes_each_cut_out_and_its_raw_matte(
    clean_state, worker_factory, brightness
):
    """The whole path: pool processes send photo and matte through the device process's suffix; each
    cut-out agrees with the CPU's edge steps on its stored raw matte, as a re-render gives."""
    overlap = {"CVUNET_OVERLAP": "1", "CVUNET_IN_FLIGHT": "2", "CVUNET_MAX_BATCH": "2"}
    worker = worker_factory("gpu0@%h", CVUNET_MODEL=str(brightness), CVUNET_EDGES_ON_DEVICE="on", **overlap)
    items = [Item(f"{name}.png", cv2.imencode(".png", rgb[..., ::-1])[1].tobytes()) for name, rgb in photos().items()]
    batch_id = submit_batch(items, OutputOptions())
    wait_batch(batch_id, timeout=180)
    rows = {row["filename"]: row for row in rows_of(batch_id)}
    assert all(row["state"] == "success" for row in rows.values()), [(r["state"], r["error"]) for r in rows.values()]
    assert "the edge steps on the device (edge suffix)" in worker.log_path.read_text()
    for name, rgb in photos().items():
        output = load_settings().data_dir / rows[f"{name}.png"]["output_path"]
        cut = cv2.imread(str(output), cv2.IMREAD_UNCHANGED)
        raw = cv2.imread(str(raw_matte_path(output)), cv2.IMREAD_UNCHANGED)
        assert cut.shape == (*rgb.shape[:2], 4) and raw.shape == rgb.shape[:2]
        cpu_rgb, cpu_alpha = finish(rgb.copy(), raw, None, OutputOptions())
        differ = np.abs(cut[..., 3].astype(np.int16) - cpu_alpha)
        assert np.mean(differ <= 2) >= 0.998, f"{name}: {np.mean(differ <= 2):.5f} within 2 levels"
