"""The OpenAPI 3.0 description of /api/v1, built from the routing table the API is served from."""

from __future__ import annotations

from functools import cache

from cvunet_matting import __version__

from .operations import OPERATIONS
from .schemas import SCHEMAS


def paths() -> dict:
    """Each declared operation under its path and method."""
    found: dict[str, dict] = {}
    for operation in OPERATIONS.values():
        found.setdefault(operation.path, {})[operation.method.lower()] = operation.openapi()
    return found


@cache
def document() -> dict:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "cvunet-matting",
            "version": __version__,
            "description": "Image matting (background removal) behind a queue: submit, poll, download.",
        },
        "paths": paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        # A per-user API key (`cvunet-matting user key add NAME`); the browser session never counts here.
        "security": [{"bearerAuth": []}],
    }
