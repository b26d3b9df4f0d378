"""How sure the model was of a cut-out, from its raw matte: a score in 0-1, high when it was sure.

A sure matte is 0 or 255 but along the subject's outline, where hair, fur and blur are really partly
transparent. What is partly transparent far from the outline (farther than the edge band solid.py
keeps) is doubt: a coat the model half believed in, a background it half kept. The score is 1 less
the share of the matte's visible pixels (alpha 12 or more) left at 12-243 beyond the band. A matte
with (almost) no subject, or one that is subject across the whole frame, cut nothing out: 0.

Computed on the raw matte, before the edge steps, since solidify hides exactly what the score shows.
"""

from __future__ import annotations

import numpy as np

from .solid import Distances, distances

# Below this a cut-out is doubtful (README, "Confidence"): the close-up cat's raw matte scores 0.60,
# the astronaut 0.98, a coffee cup 1.0, a rocket photo with lens flares 0.91.
DOUBTFUL = 0.85
LOW, HIGH = 12, 243  # issue #27's "partly transparent": fainter or stronger than this is a sure 0 or 255
EMPTY, WHOLE = 0.001, 0.995  # subject shares of the frame (alpha >= 0.5) that cut nothing out


def confidence(alpha: np.ndarray, maps: Distances | None = None) -> float:
    """The raw matte's score, 0 (nothing to trust) to 1 (sure everywhere but at the outline).
    `maps`: solid.distances(alpha), when the caller has them (the worker shares them with solidify)."""
    maps = distances(alpha) if maps is None else maps
    subject = np.count_nonzero(maps.inside) / maps.small.size
    if subject < EMPTY or subject > WHOLE:
        return 0.0
    visible = maps.small >= LOW
    unsure = int(np.count_nonzero(visible & (maps.small <= HIGH) & maps.beyond_band()))
    return round(1 - unsure / max(1, int(np.count_nonzero(visible))), 3)


def is_doubtful(score: float | None) -> bool:
    """Whether a stored score flags its cut-out (None: made before scores were kept)."""
    return score is not None and score < DOUBTFUL
