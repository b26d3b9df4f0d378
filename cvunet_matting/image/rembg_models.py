"""rembg's model names that our one general model stands in for (its default `u2net` among them): the
rembg-compatible server and the Python API take these; rembg's special-purpose models (human or cloth
segmentation, anime, sam, birefnet...) they refuse, naming these."""

from __future__ import annotations

GENERAL_MODELS = ("u2net", "u2netp", "silueta", "isnet-general-use")
