"""The edge suffix as a session of its own, beside a batching model session.

A device process runs its pool processes' images as batches of the model (one fixed-size input); the
edge steps work at each photo's own size, so they cannot join the batch: they run here, image by image,
on the model's uint8 alpha, on the same providers as the model (edge_suffix.suffix_only_model).
"""

from __future__ import annotations

import numpy as np

from cvunet_matting.config import Settings

from .edge_suffix import ALPHA, FLAGS, FOREGROUND, MATTE, PHOTO, RAW, EdgeMath, edges_wanted, plan, suffix_only_model
from .protocols import EdgeOutputs
from .session import MattingSession


class EdgeSuffix:
    def __init__(self, model: MattingSession, math: EdgeMath):
        import onnxruntime as ort

        assert model.manifest.size is not None, "the suffix alone needs the model's fixed size"
        self.math = math
        self.model_size = (model.manifest.size[0], model.manifest.size[1])
        graph = suffix_only_model(self.model_size, math)
        self.session = ort.InferenceSession(graph, sess_options=model.options, providers=model.provider_config)
        self.providers = self.session.get_providers()

    def run(self, matte: np.ndarray, rgb: np.ndarray, refine: bool, solidify: bool) -> EdgeOutputs:
        """`matte`: the model's uint8 alpha (1, 1, h, w); `rgb`: the photo (HxWx3 uint8)."""
        feeds = plan(rgb.shape[:2], self.model_size, self.math)
        feeds |= {MATTE: matte, PHOTO: rgb, FLAGS: np.array([refine, solidify])}
        return EdgeOutputs(*self.session.run([RAW, ALPHA, FOREGROUND], feeds))


def edge_suffix_for(model: MattingSession, settings: Settings, math: EdgeMath) -> EdgeSuffix | None:
    """The suffix beside `model` where CVUNET_EDGES_ON_DEVICE wants it on the model's provider, and
    the model gives what it follows: a uint8 alpha of a fixed size (an RGBA or any-size model: None,
    the pool processes do the edge steps)."""
    if not edges_wanted(settings.edges_on_device, model.providers[0]):
        return None
    manifest = model.manifest
    if manifest.size is None or manifest.output_kind != "alpha" or not model.uint8_io:
        return None
    return EdgeSuffix(model, math)
