"""The device process: a worker's one model session (one per GPU), serving all its pool processes.

Each pool process holds one image at a time and sends the model's input here over a Unix socket;
a batcher thread runs what is waiting as one batch (a fixed-size model, up to CVUNET_MAX_BATCH
images, after waiting at most CVUNET_BATCH_WAIT_MS for the batch to fill) or one at a time (an
any-size model). A batch whose run fails is run again one image at a time, so a bad input fails
alone; an image marked `alone` (it was in hand when a worker died before) always runs by itself,
so a poison input cannot take its neighbours down with it a second time. Each image is told when
its run starts: when the process dies, only the images of the run in progress count it as a crash;
those still waiting are sent again to the restarted process. A run starts only once every image of
the run before has its answer: one dying before that answer left would take an image it had
finished down with it, and charge it a crash.
Where CVUNET_EDGES_ON_DEVICE is `on` (`auto` leaves it off here: suffix_session.edge_suffix_for), each image that
asks for them goes through the edge suffix after the batch, one by one (each photo has its own size),
and its outputs are written into its slot (device_protocol.edge_views).
Started and restarted by `device_host` in the worker's main process: `python -m cvunet_matting.worker.device_server`.
What it hears and answers is declared in device_protocol.py.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import logging
import mmap
import os
import queue
import signal
import threading
import time
from multiprocessing.connection import Connection, Listener
from multiprocessing.reduction import recv_handle
from pathlib import Path

import numpy as np

from . import device_protocol as wire
from .device_protocol import AUTHKEY_ENV

log = logging.getLogger(__name__)
STATS_EVERY = 50  # images between two log lines of the batches' mean size
ANSWER_WAIT_S = 10.0  # for a pool process that stopped reading its answers (it has a socket, not a hang)


class Job:
    __slots__ = ("alone", "answered", "conn", "done", "edges", "error", "result", "slot", "tensor")

    def __init__(
        self,
        tensor: np.ndarray,
        alone: bool,
        conn: Connection,
        edges: wire.EdgeOrder | None = None,
        slot: mmap.mmap | None = None,
    ):
        self.tensor: np.ndarray | None = tensor  # None once answered: the slot is the pool process's again
        self.alone, self.conn = alone, conn
        self.edges, self.slot = edges, slot  # the edge steps asked for, and the slot the photo lies in
        self.done = threading.Event()
        self.answered = threading.Event()
        self.result: np.ndarray | str | None = None
        self.error: str | None = None

    def finish(self, result: np.ndarray | str | None = None, error: str | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()

    def reply(self) -> None:
        """Send the outcome to the pool process (from its handler thread, so that the answers of one
        batch leave side by side), then let the next run start."""
        try:
            self.conn.send(wire.ok(self.result) if self.error is None else wire.error(self.error))
        finally:
            self.answered.set()


class DeviceServer:
    def __init__(self, session, max_batch: int, wait_s: float, suffix=None):
        self.session = session
        self.suffix = suffix  # model/suffix_session.EdgeSuffix, where the edge steps run here
        self.max_batch = max_batch if session.batched else 1
        self.wait_s = wait_s
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.held: collections.deque[Job] = collections.deque()  # taken, but must start the next batch
        self.finished: list[Job] = []  # the last run's images, whose answers may not have left yet
        self.runs = self.images = 0

    def hello(self) -> wire.Hello:
        s = self.session
        edges = self.suffix is not None
        return {"manifest": s.manifest.to_dict(), "providers": s.providers, "max_batch": self.max_batch, "edges": edges}

    def stats(self) -> wire.Stats:
        return {"runs": self.runs, "images": self.images}

    def handle(self, conn: Connection) -> None:
        """One pool process's requests, one at a time (it holds one image). Its model input arrives
        in the slot it shares (device_client.Slot): mapped here once, read in place."""
        slot: mmap.mmap | None = None
        try:
            while True:
                request = conn.recv()
                kind = wire.kind_of(request)
                if kind is wire.Request.RUN:
                    order = wire.RunOrder.read(request)
                    tensor = np.ndarray(order.shape, np.dtype(order.dtype), buffer=slot)
                    job = Job(tensor, order.alone, conn, order.edges, slot)
                    self.jobs.put(job)
                    job.done.wait()
                    job.reply()
                    job.tensor = None  # the slot is the pool process's again
                elif kind is wire.Request.SLOT:
                    fd = recv_handle(conn)
                    slot = mmap.mmap(fd, wire.slot_size(request))
                    os.close(fd)
                elif kind is wire.Request.HELLO:
                    conn.send(wire.ok(self.hello()))
                elif kind is wire.Request.STATS:
                    conn.send(wire.ok(self.stats()))
        except (EOFError, OSError):  # the pool process finished, was replaced or was killed
            pass
        finally:
            conn.close()
            if slot is not None:
                with contextlib.suppress(BufferError):
                    slot.close()

    def next_batch(self) -> list[Job]:
        first = self.held.popleft() if self.held else self.jobs.get()
        batch = [first]
        if first.alone:
            return batch
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_batch:
            try:
                job = self.jobs.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job.alone:
                self.held.append(job)
                break
            batch.append(job)
        return batch

    def run(self, batch: list[Job]) -> None:
        self.await_answers()
        # Each image is told its run starts: if this process dies now, those images were in the
        # run (a crash to count against them); the others waiting here are only sent again.
        for job in batch:
            with contextlib.suppress(OSError):
                job.conn.send(wire.running())
        try:
            outputs = self.session.infer_batch([job.tensor for job in batch])
        except Exception as exc:
            if len(batch) > 1:  # which input failed? each alone, so only that one fails
                log.warning("a batch of %d failed (%s); running its images one by one", len(batch), exc)
                for job in batch:
                    self.run([job])
                return
            log.exception("model run failed")
            batch[0].finish(error=f"{type(exc).__name__}: {exc}")
            self.finished = batch
            return
        self.runs += 1
        self.images += len(batch)
        if self.images // STATS_EVERY != (self.images - len(batch)) // STATS_EVERY:
            log.info("device: %d images in %d runs, %.2f per run", self.images, self.runs, self.images / self.runs)
        for job, output in zip(batch, outputs, strict=True):
            if job.edges is None:
                job.finish(result=output)
            else:
                self.finish_edges(job, output)
        self.finished = batch

    def finish_edges(self, job: Job, matte: np.ndarray) -> None:
        """The edge steps of one image after the batch's model run, their outputs put in its slot.
        A failure here is this image's alone (its neighbours' model runs went well)."""
        assert job.edges is not None and job.tensor is not None
        try:
            if self.suffix is None:
                raise RuntimeError("this device process runs no edge suffix")
            photo = wire.photo_view(job.slot, job.tensor.nbytes, job.edges)
            done = self.suffix.run(matte, photo, job.edges.refine, job.edges.solidify)
            for place, value in zip(wire.edge_views(job.slot, job.tensor.nbytes, job.edges), done, strict=True):
                place[...] = value  # over the photo, which the suffix has read
        except Exception as exc:
            log.exception("edge steps failed")
            job.finish(error=f"{type(exc).__name__}: {exc}")
            return
        job.finish(result=wire.EDGES_IN_SLOT)

    def await_answers(self) -> None:
        """Wait until the last run's images have their answers (sent while the next batch gathers,
        so this rarely waits): should the next run kill this process, they are safe."""
        for job in self.finished:
            if not job.answered.wait(ANSWER_WAIT_S):
                log.warning("device: a pool process took over %.0fs to take its answer", ANSWER_WAIT_S)
        self.finished = []

    def run_forever(self) -> None:
        while True:
            self.run(self.next_batch())


def die_with_parent(parent: int) -> None:
    """Exit when the worker's main process dies, even by kill -9 (Linux's parent-death signal)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def serve(address: str, authkey: bytes, server: DeviceServer) -> None:
    Path(address).unlink(missing_ok=True)
    threading.Thread(target=server.run_forever, name="device-batcher", daemon=True).start()
    with Listener(address, "AF_UNIX", authkey=authkey) as listener:
        edges = ", the edge steps on the device (edge suffix)" if server.suffix is not None else ""
        log.info(
            "device process %d serving on %s (batches of up to %d%s)", os.getpid(), address, server.max_batch, edges
        )
        while True:
            try:
                conn = listener.accept()
            except (OSError, EOFError) as exc:  # a client that died during the handshake
                log.warning("device: refused a connection: %s", exc)
                continue
            threading.Thread(target=server.handle, args=(conn,), name="device-client", daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args()
    die_with_parent(args.parent)
    # The worker's main process stops it once the pool is done; a terminal's Ctrl-C or a SIGTERM to
    # the group must not take the model away from images still in hand.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from cvunet_matting.config import get_settings
    from cvunet_matting.image.device_finish import edge_math
    from cvunet_matting.malloc import tune_for_large_buffers
    from cvunet_matting.model.session import MattingSession, resolve_model
    from cvunet_matting.model.suffix_session import edge_suffix_for

    from .overlap import overlap_of

    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="[%(asctime)s: %(levelname)s/device] %(message)s")
    tune_for_large_buffers()
    overlap = overlap_of(settings)
    session = MattingSession(*resolve_model(settings), settings, uint8_io=True, dynamic_batch=overlap.max_batch > 1)
    suffix = edge_suffix_for(session, settings, edge_math())
    authkey = bytes.fromhex(os.environ[AUTHKEY_ENV])
    serve(args.socket, authkey, DeviceServer(session, overlap.max_batch, overlap.batch_wait_s, suffix))


if __name__ == "__main__":
    main()
