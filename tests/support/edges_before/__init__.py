"""The edge steps as they were before edge-speed made them cheaper (copied from cvunet_matting/image at
commit 729865d, unchanged but for this package's imports): the reference that tests/test_edge_speed.py
holds the fast path to, within the tolerances it states. Not used by the package.
"""

from .confidence import confidence
from .edges import finish

__all__ = ["confidence", "finish"]
