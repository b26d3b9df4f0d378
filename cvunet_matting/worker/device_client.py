"""A pool process's session when its worker has a device process: a `Session` (model/protocols.py)
as MattingSession is, with the model run sent over the worker's Unix socket (device_protocol.py).
Pre- and post-processing stay here, in the pool process, beside the other images' decode and encode,
while the device runs the model for the image before. Where the device process runs the edge suffix,
it is an `EdgeSession` too: the photo goes along in the slot and the finished matte and colours come
back in it."""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import threading
import time
from dataclasses import replace
from multiprocessing.connection import Client, Connection
from multiprocessing.reduction import send_handle
from typing import Any

import numpy as np

from cvunet_matting.config import Settings
from cvunet_matting.image.device_finish import edge_math
from cvunet_matting.model.manifest import Manifest
from cvunet_matting.model.protocols import EdgeOutputs, Session
from cvunet_matting.model.session import alpha_from_output, get_session, model_input, predict_alpha

from . import device_protocol as wire
from .device_protocol import AUTHKEY_ENV, CONNECT_TIMEOUT_S, SOCKET_ENV

log = logging.getLogger(__name__)


class DeviceLost(Exception):
    """The device process died with this image's request in hand (it crashed, or was killed)."""


class DeviceRunError(Exception):
    """The device process ran the model on this input and it failed (a batch is rerun image by image
    first, so it failed alone). Not errors.DeviceError, which says the requested device is missing."""


class Slot:
    """Memory both processes map (a memfd, freed with the last process that holds it, even after a
    kill -9): the model input crosses without being pickled, sent and copied again on each side
    (measured: the device process spent 11 ms of CPU per 1024x1024 image on that alone)."""

    def __init__(self, size: int):
        self.size = max(size, 1)
        self.fd = os.memfd_create("cvunet-model-input")
        os.ftruncate(self.fd, self.size)
        self.map = mmap.mmap(self.fd, self.size)

    def put(self, tensor: np.ndarray) -> None:
        np.ndarray(tensor.shape, tensor.dtype, buffer=self.map)[...] = tensor

    def put_photo(self, input_nbytes: int, edges: wire.EdgeOrder, rgb: np.ndarray) -> None:
        wire.photo_view(self.map, input_nbytes, edges)[...] = rgb

    def edge_outputs(self, input_nbytes: int, edges: wire.EdgeOrder) -> EdgeOutputs:
        """Copies: the slot is overwritten by this process's next image."""
        return EdgeOutputs(*(view.copy() for view in wire.edge_views(self.map, input_nbytes, edges)))

    def close(self) -> None:
        with contextlib.suppress(BufferError):
            self.map.close()
        os.close(self.fd)


class RemoteSession:
    def __init__(self, address: str, authkey: bytes, connect_timeout: float = CONNECT_TIMEOUT_S):
        self.address, self.authkey, self.connect_timeout = address, authkey, connect_timeout
        self.lock = threading.RLock()  # predict_edges holds it around its call and its read-back
        self.conn: Connection | None = None
        self.slot: Slot | None = None
        self.shared_with: Connection | None = None
        info: wire.Hello = self.call(wire.hello_request())
        self.manifest = Manifest.from_dict(info["manifest"])
        self.providers = info["providers"]
        self.max_batch = info["max_batch"]
        self.edges = bool(info.get("edges"))

    @property
    def version(self) -> str:
        return self.manifest.version

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        return model_input(rgb, self.manifest, uint8=True)

    def infer(self, tensor: np.ndarray, alone: bool = False) -> np.ndarray:
        return self.call(wire.RunOrder.of_tensor(tensor, alone).message(), tensor)

    def postprocess(self, raw: np.ndarray, height: int, width: int) -> np.ndarray:
        return alpha_from_output(raw, self.manifest, height, width)

    def predict_alpha(self, rgb: np.ndarray, timings: dict[str, float] | None = None) -> np.ndarray:
        return predict_alpha(self, rgb, timings)

    @property
    def edges_on_device(self) -> bool:
        return self.edges

    def predict_edges(
        self,
        rgb: np.ndarray,
        refine: bool,
        solidify: bool,
        timings: dict[str, float] | None = None,
        alone: bool = False,
    ) -> EdgeOutputs:
        """The model and the edge steps on the device: the raw matte, the finished matte and the
        foreground colours at the photo's size (model/session.MattingSession.predict_edges's)."""
        timings = {} if timings is None else timings
        clock = time.perf_counter()
        tensor = self.preprocess(rgb)
        edges = wire.EdgeOrder(rgb.shape[0], rgb.shape[1], refine, solidify)
        timings["preprocess"] = (now := time.perf_counter()) - clock
        with self.lock:
            self.call(wire.RunOrder.of_tensor(tensor, alone, edges).message(), tensor, (edges, rgb))
            assert self.slot is not None
            done = self.slot.edge_outputs(tensor.nbytes, edges)
        timings["inference"] = time.perf_counter() - now
        return done

    def isolated(self) -> Alone:
        return Alone(self)

    def stats(self) -> wire.Stats:
        return self.call(wire.stats_request())

    def call(
        self, request: tuple, tensor: np.ndarray | None = None, photo: tuple[wire.EdgeOrder, np.ndarray] | None = None
    ) -> Any:
        """Send `request` (and `tensor` and `photo`, through the shared slot) and return the answer. A device
        process that dies before this image's run started is only waited for (it restarts) and asked
        again; one that dies during the run raises DeviceLost: this image may be what killed it."""
        with self.lock:
            while True:
                conn, running = self._connection(), False
                try:
                    if tensor is not None:
                        self._share(conn, tensor, photo)
                    conn.send(request)
                    status, payload = conn.recv()
                    while status == wire.Reply.RUNNING:
                        running = True
                        status, payload = conn.recv()
                    break
                except (EOFError, OSError) as exc:
                    self._drop()
                    if running:
                        raise DeviceLost(f"the device process died running this image: {exc!r}") from exc
                    log.warning("device process went away before this image's run; asking again: %r", exc)
                except BaseException:  # a time limit mid-request: the reply must not meet the next one
                    self._drop()
                    raise
        if status != wire.Reply.OK:
            raise DeviceRunError(payload)
        return payload

    def _connection(self) -> Connection:
        # Readable while idle means closed: the device process restarted since our last request.
        if self.conn is not None and self.conn.poll(0):
            self._drop()
        deadline = time.monotonic() + self.connect_timeout
        while self.conn is None:
            try:
                self.conn = Client(self.address, "AF_UNIX", authkey=self.authkey)
            except OSError as exc:  # not listening yet (loading the model) or restarting
                if time.monotonic() > deadline:
                    raise DeviceLost(f"no device process at {self.address}: {exc}") from exc
                time.sleep(0.1)
        return self.conn

    def _share(self, conn: Connection, tensor: np.ndarray, photo: tuple[wire.EdgeOrder, np.ndarray] | None) -> None:
        """Put the model input (and the photo) in the slot, first handing the slot to this connection's
        device process (a file descriptor sent over the socket) when it has not seen it yet."""
        needed = wire.slot_bytes(tensor.nbytes, None if photo is None else photo[0])
        if self.slot is None or self.slot.size < needed:
            if self.slot is not None:
                self.slot.close()
            self.slot, self.shared_with = Slot(needed), None
        if self.shared_with is not conn:
            conn.send(wire.slot_request(self.slot.size))
            send_handle(conn, self.slot.fd, 0)
            self.shared_with = conn
        self.slot.put(tensor)
        if photo is not None:
            self.slot.put_photo(tensor.nbytes, *photo)

    def _drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Alone:
    """The session for an image that was in hand when a worker died: its model run is never batched."""

    def __init__(self, remote: RemoteSession):
        self.remote = remote
        self.manifest, self.providers = remote.manifest, remote.providers

    @property
    def version(self) -> str:
        return self.remote.version

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        return self.remote.preprocess(rgb)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        return self.remote.infer(tensor, alone=True)

    def postprocess(self, raw: np.ndarray, height: int, width: int) -> np.ndarray:
        return self.remote.postprocess(raw, height, width)

    def predict_alpha(self, rgb: np.ndarray, timings: dict[str, float] | None = None) -> np.ndarray:
        return predict_alpha(self, rgb, timings)

    @property
    def edges_on_device(self) -> bool:
        return self.remote.edges

    def predict_edges(
        self, rgb: np.ndarray, refine: bool, solidify: bool, timings: dict[str, float] | None = None
    ) -> EdgeOutputs:
        return self.remote.predict_edges(rgb, refine, solidify, timings, alone=True)


def overlapped() -> bool:
    """Whether this process is a pool process of a worker with a device process."""
    return bool(os.environ.get(SOCKET_ENV))


def one_thread_each(settings: Settings) -> Settings:
    """In an overlapped worker the pool's processes are the parallelism: each runs OpenCV and the PNG
    deflate on one thread. N processes of one thread per core each would oversubscribe the cores N
    times over (measured, 3 processes on 2 busy cores: the edge steps 4.6x slower, encode 4x)."""
    import cv2

    cv2.setNumThreads(1)
    return replace(settings, encode_threads=1)


_remote: RemoteSession | None = None
_remote_pid = 0
_remote_lock = threading.Lock()


def worker_session(settings: Settings | None = None, alone: bool = False) -> Session:
    """The session a task uses: the device process's when the worker has one, else the process's own."""
    global _remote, _remote_pid
    address = os.environ.get(SOCKET_ENV)
    if not address:  # the edge suffix, where CVUNET_EDGES_ON_DEVICE wants it on this device
        return get_session(settings, edge_math())
    with _remote_lock:  # the warm-up thread and the first task may ask at once
        if _remote is None or _remote_pid != os.getpid():
            _remote = RemoteSession(address, bytes.fromhex(os.environ[AUTHKEY_ENV]))
            _remote_pid = os.getpid()
    return _remote.isolated() if alone else _remote
