"""The edge suffix as a session of its own, beside a batching model session.

A device process runs its pool processes' images as batches of the model (one fixed-size input); the
edge steps work at each photo's own size, so they cannot join the batch: they run here, image by image,
on the model's uint8 alpha, on the same providers as the model (edge_suffix.suffix_only_model).
"""

from __future__ import annotations

import numpy as np

from cvunet_matting.config import Settings

from .edge_suffix import ALPHA, FLAGS, FOREGROUND, MATTE, PHOTO, RAW, EdgeMath, plan, suffix_only_model
from .protocols import EdgeOutputs
from .session import MattingSession


class EdgeSuffix:
    """`model_size`: the model's matte, (height, width); `providers` and `options` as onnxruntime takes
    them (a device process passes its model's: edge_suffix_for)."""

    def __init__(self, model_size: tuple[int, int], math: EdgeMath, providers: list, options=None):
        import onnxruntime as ort

        self.math, self.model_size = math, model_size
        graph = suffix_only_model(model_size, math)
        self.session = ort.InferenceSession(graph, sess_options=options, providers=providers)

    def run(self, matte: np.ndarray, rgb: np.ndarray, refine: bool, solidify: bool) -> EdgeOutputs:
        """`matte`: the model's uint8 alpha (1, 1, h, w); `rgb`: the photo (HxWx3 uint8)."""
        feeds = plan(rgb.shape[:2], self.model_size, self.math)
        feeds |= {MATTE: matte, PHOTO: rgb, FLAGS: np.array([refine, solidify])}
        return EdgeOutputs(*self.session.run([RAW, ALPHA, FOREGROUND], feeds))


def edge_suffix_for(model: MattingSession, settings: Settings, math: EdgeMath) -> EdgeSuffix | None:
    """The suffix beside a device process's `model` where CVUNET_EDGES_ON_DEVICE is `on` and the model
    gives what it follows: a uint8 alpha of a fixed size (an RGBA or any-size model: None, the pool
    processes do the edge steps).

    `auto` leaves it off here, on CUDA too. The device process runs one image's suffix at a time after
    each batch, and on an H100 a 1600x1200 photo's suffix took 21 ms, mostly a fixed cost (14 ms at
    1 MP, 45 at 12 MP: launches and copies, not arithmetic): about 37 photos a second a GPU, which the
    pool's processes beat on the host's cores from three cores a GPU up (66 ms of CPU a photo; an
    estimate from make bench-edges and cpu_stages, not yet a measurement of this path). Where
    a node has fewer cores a GPU, `on` (make bench-device-edges measures both on the node)."""
    if settings.edges_on_device != "on":
        return None
    manifest = model.manifest
    if manifest.size is None or manifest.output_kind != "alpha" or not model.uint8_io:
        return None
    return EdgeSuffix((manifest.size[0], manifest.size[1]), math, model.provider_config, model.options)
