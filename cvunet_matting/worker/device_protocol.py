"""What a pool process and its worker's device process say to each other over the Unix socket,
declared once for both ends (device_client.py asks, device_server.py answers).

A request is a tuple whose first item is a `Request`; every answer is `(Reply, payload)`. A "run"
is answered first by `Reply.RUNNING` when the image's model run starts (so that a device process
that dies from then on is charged to this image), then by OK with the model's output or ERROR with
the reason. Its input does not travel in the message: it lies in the memory both processes map,
handed over once per connection by a "slot" request followed by the file descriptor itself.

Where the device process runs the edge suffix (its hello says `edges`), a run may ask for the edge
steps too: the photo then lies in the slot after the model's input (at `photo_offset`), and the
answer's payload is `EDGES_IN_SLOT`: the raw matte, the finished matte and the foreground colours
were written over the photo's place (`edge_views`), 5 bytes a pixel, so that a 33 MP photo's
outputs are not pickled and copied through the socket.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from enum import StrEnum
from typing import Any, TypedDict

import numpy as np

# Where the device process listens and the key it accepts: set by the worker's main process before
# its pool forks, so every pool process inherits them (device_host.py, device_client.py).
SOCKET_ENV, AUTHKEY_ENV = "CVUNET_DEVICE_SOCKET", "CVUNET_DEVICE_AUTHKEY"
# A device process (re)starting loads the model first: on a GPU with TensorRT's first engine build
# that takes minutes; otherwise seconds.
CONNECT_TIMEOUT_S = 600.0


class Request(StrEnum):
    RUN = "run"  # (RUN, shape, dtype, alone, edges): run the model on the input in the slot (edges: EdgeOrder)
    SLOT = "slot"  # (SLOT, size), then the slot's file descriptor: map it for this connection's runs
    HELLO = "hello"  # (HELLO,): the model's manifest, providers and largest batch
    STATS = "stats"  # (STATS,): runs and images so far


class Reply(StrEnum):
    OK = "ok"
    ERROR = "error"  # the payload is the reason, a string
    RUNNING = "running"  # a run's model run has started; its answer follows


class Hello(TypedDict):
    manifest: dict[str, Any]
    providers: list[str]
    max_batch: int
    edges: bool  # the device runs the edge steps (edge suffix) when a run asks for them


EDGES_IN_SLOT = "edges in slot"  # an edge run's payload: its outputs are in the slot (edge_views)
EDGE_BYTES_PER_PIXEL = 5  # raw matte 1, finished matte 1, foreground 3; the photo's 3 fit in their place


class Stats(TypedDict):
    runs: int
    images: int


@dataclass(frozen=True)
class EdgeOrder:
    """The edge steps a run asks for: the photo's size (it lies in the slot) and which steps."""

    height: int
    width: int
    refine: bool
    solidify: bool


@dataclass(frozen=True)
class RunOrder:
    """A run request, read: the input's shape and dtype in the slot, whether it must run alone
    (it was in hand when a worker died before: never batched with other images), and the edge
    steps wanted after the model, if any."""

    shape: tuple[int, ...]
    dtype: str
    alone: bool
    edges: EdgeOrder | None = None

    def message(self) -> tuple:
        edges = None if self.edges is None else astuple(self.edges)
        return (Request.RUN, self.shape, self.dtype, self.alone, edges)

    @classmethod
    def of_tensor(cls, tensor: np.ndarray, alone: bool, edges: EdgeOrder | None = None) -> RunOrder:
        return cls(tuple(tensor.shape), tensor.dtype.str, alone, edges)

    @classmethod
    def read(cls, message: tuple) -> RunOrder:
        _, shape, dtype, alone, edges = message
        order = None if edges is None else EdgeOrder(int(edges[0]), int(edges[1]), bool(edges[2]), bool(edges[3]))
        return cls(tuple(shape), str(dtype), bool(alone), order)


def photo_offset(input_nbytes: int) -> int:
    """Where the photo starts in the slot: after the model's input, 64-byte aligned."""
    return -(-input_nbytes // 64) * 64


def slot_bytes(input_nbytes: int, edges: EdgeOrder | None) -> int:
    """The slot a run needs: the model's input, and the photo's place when it asks for the edges."""
    if edges is None:
        return input_nbytes
    return photo_offset(input_nbytes) + EDGE_BYTES_PER_PIXEL * edges.height * edges.width


def photo_view(buffer, input_nbytes: int, edges: EdgeOrder) -> np.ndarray:
    """The photo's place in the slot (HxWx3 uint8)."""
    return np.ndarray((edges.height, edges.width, 3), np.uint8, buffer=buffer, offset=photo_offset(input_nbytes))


def edge_views(buffer, input_nbytes: int, edges: EdgeOrder) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where an edge run's outputs lie in the slot: raw matte, finished matte (HxW), foreground (HxWx3)."""
    start, pixels, size = photo_offset(input_nbytes), edges.height * edges.width, (edges.height, edges.width)
    raw = np.ndarray(size, np.uint8, buffer=buffer, offset=start)
    alpha = np.ndarray(size, np.uint8, buffer=buffer, offset=start + pixels)
    foreground = np.ndarray((*size, 3), np.uint8, buffer=buffer, offset=start + 2 * pixels)
    return raw, alpha, foreground


def slot_request(size: int) -> tuple:
    return (Request.SLOT, size)


def slot_size(message: tuple) -> int:
    return int(message[1])


def hello_request() -> tuple:
    return (Request.HELLO,)


def stats_request() -> tuple:
    return (Request.STATS,)


def kind_of(message: tuple) -> Request:
    return Request(message[0])


def ok(payload: Any) -> tuple[Reply, Any]:
    return (Reply.OK, payload)


def error(reason: str) -> tuple[Reply, str]:
    return (Reply.ERROR, reason)


def running() -> tuple[Reply, None]:
    return (Reply.RUNNING, None)
