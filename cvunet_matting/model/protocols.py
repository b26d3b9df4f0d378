"""The interfaces of a model session, by what its users call, not by its class.

A worker's task may be handed its own process's `MattingSession` (session.py) or, in an overlapped
worker, a `RemoteSession` that sends the model run to the device process (worker/device_client.py):
both are a `Session`, and code that takes either says so, so a type checker catches one handed where
only the other is declared.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np


class Session(Protocol):
    """What one image's work (worker/image_job.py, image/matting.py) needs of a session."""

    @property
    def version(self) -> str:
        """The model's version: part of a result's identity (a new model, new results)."""
        ...

    def predict_alpha(self, rgb: np.ndarray, timings: dict[str, float] | None = None) -> np.ndarray:
        """HxWx3 uint8 RGB -> HxW uint8 alpha; fills `timings` (seconds per stage) when given."""
        ...


class ModelStages(Protocol):
    """The three steps `session.predict_alpha` chains: where each runs is the session's business."""

    def preprocess(self, rgb: np.ndarray) -> np.ndarray: ...

    def infer(self, tensor: np.ndarray) -> np.ndarray: ...

    def postprocess(self, raw: np.ndarray, height: int, width: int) -> np.ndarray: ...


class EdgeOutputs(NamedTuple):
    """What the edge suffix (edge_suffix.py) returns, all at the photo's size, uint8."""

    raw: np.ndarray  # the model's matte upscaled (HxW), as predict_alpha returns it
    alpha: np.ndarray  # refined and solidified as asked (HxW)
    foreground: np.ndarray  # the photo's colours with the edge pixels decontaminated (HxWx3)


@runtime_checkable
class EdgeSession(Protocol):
    """A session that can also run the edge steps on its device (model/session.py, edge suffix)."""

    @property
    def edges_on_device(self) -> bool: ...

    def predict_edges(
        self, rgb: np.ndarray, refine: bool, solidify: bool, timings: dict[str, float] | None = None
    ) -> EdgeOutputs: ...
