"""Training targets (docs/method.md, "Targets"; departures D1-D3).

- the mask is binarised (1 channel) and skeletonised explicitly (8-connected 2-D skeleton, D1);
- the target is the Euclidean distance to that skeleton, clipped at ``clip_px``;
- an empty mask gives a target of all ``clip_px`` (D2: scipy's EDT on a mask without zeros
  measures distance to a phantom point outside the corner);
- masks are never resized bilinearly (D3): crops are taken at native resolution.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..skeleton import skeletonize_mask

__all__ = ["distance_target", "skeletonize_mask"]


def distance_target(skeleton: np.ndarray, *, clip_px: float = 20.0) -> np.ndarray:
    """Clipped distance (pixels) to the nearest skeleton pixel; all ``clip_px`` if empty (D2).

    >>> float(distance_target(np.zeros((3, 3), bool)).max())
    20.0
    """
    skeleton = np.asarray(skeleton, bool)
    if not skeleton.any():
        return np.full(skeleton.shape, clip_px, np.float32)
    dist = ndimage.distance_transform_edt(~skeleton)
    return np.minimum(dist, clip_px).astype(np.float32)
