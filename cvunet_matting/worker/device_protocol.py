"""What a pool process and its worker's device process say to each other over the Unix socket,
declared once for both ends (device_client.py asks, device_server.py answers).

A request is a tuple whose first item is a `Request`; every answer is `(Reply, payload)`. A "run"
is answered first by `Reply.RUNNING` when the image's model run starts (so that a device process
that dies from then on is charged to this image), then by OK with the model's output or ERROR with
the reason. Its input does not travel in the message: it lies in the memory both processes map,
handed over once per connection by a "slot" request followed by the file descriptor itself.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    RUN = "run"  # (RUN, shape, dtype, alone): run the model on the input in the slot
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


class Stats(TypedDict):
    runs: int
    images: int


@dataclass(frozen=True)
class RunOrder:
    """A run request, read: the input's shape and dtype in the slot, and whether it must run alone
    (it was in hand when a worker died before: never batched with other images)."""

    shape: tuple[int, ...]
    dtype: str
    alone: bool

    def message(self) -> tuple:
        return (Request.RUN, self.shape, self.dtype, self.alone)

    @classmethod
    def of_tensor(cls, tensor: np.ndarray, alone: bool) -> RunOrder:
        return cls(tuple(tensor.shape), tensor.dtype.str, alone)

    @classmethod
    def read(cls, message: tuple) -> RunOrder:
        _, shape, dtype, alone = message
        return cls(tuple(shape), str(dtype), bool(alone))


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
