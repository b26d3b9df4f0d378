"""The idempotency key: when two results are the same file, so that the second is a copy of the first.

The model worker looks a new task's key up before it runs the model (worker/image_job.py), and records
each result it makes under it; a re-render records its result under the very key the worker would
compute for its input and options (it is that result, byte for byte: image/rendering.py), so a later
upload of the same photo with those options is a copy, not a run of the model.
"""

from __future__ import annotations

import hashlib

from .encoding import OutputOptions
from .rendering import POSTPROCESS_VERSION


def idem_key(input_key: str, model_version: str, options: OutputOptions, owner: int | None = None) -> str:
    """Same input bytes, same model, same output options and post-processing: the same result, for
    one owner. Never across owners: an instant answer would tell a user that someone else had sent
    the very same photo. Work with no owner (the operator's) keeps the key it always had."""
    parts = f"{input_key}|{model_version}|post{POSTPROCESS_VERSION}|{options.key()}"
    if owner is not None:
        parts += f"|owner{owner}"
    return hashlib.sha256(parts.encode()).hexdigest()
