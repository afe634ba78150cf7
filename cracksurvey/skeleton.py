"""Skeleton stage: threshold a distance map, skeletonize the mask, keep the sparse skeleton.

Everything here runs on ONE tile (core window plus halo) held in memory as plain numpy arrays;
the engine maps :func:`extract_tile_skeleton` over tiles and concatenates the sparse results
(:meth:`TileSkeleton.concatenate`) for :func:`cracksurvey.vectorize.vectorize_skeleton`.

Glossary (see the README): the *distance map* is the model's predicted distance (pixels) to the
nearest crack centreline; the *mask* is ``distance <= threshold_px``; the *skeleton* is the
one-pixel-wide centreline of the mask; the *body* map is the probability (or mask) that a pixel
lies inside the crack body, on which width is measured (:mod:`cracksurvey.measure.width`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from skimage.morphology import skeletonize, thin

from cracksurvey.measure.width import as_2d, measure_width_px

__all__ = [
    "SkeletonMethod",
    "TileSkeleton",
    "extract_tile_skeleton",
    "skeletonize_mask",
    "threshold_distance",
]

#: Thinning algorithms: scikit-image's 2-D ``skeletonize`` (Zhang) or ``thin``.
SkeletonMethod = Literal["zhang", "thin"]


def threshold_distance(distance: ArrayLike, *, threshold_px: float) -> NDArray[np.bool_]:
    """Threshold a distance map into a crack mask.

    Parameters
    ----------
    distance : ndarray of shape (H, W) or (1, H, W), float, pixels
        Predicted distance to the nearest crack centreline. NaN marks nodata.
    threshold_px : float
        Crack pixels are those with ``distance <= threshold_px`` (pixels; from the model card).

    Returns
    -------
    mask : ndarray of shape (H, W), bool
        True on crack pixels; nodata (NaN) is never crack.

    Examples
    --------
    >>> threshold_distance(np.array([[0.0, 1.5, np.nan, 3.0]]), threshold_px=1.5)
    array([[ True,  True, False, False]])
    """
    d = as_2d(distance, "distance")
    with np.errstate(invalid="ignore"):
        mask = d <= threshold_px
    return np.asarray(mask & ~np.isnan(d), dtype=bool)


def skeletonize_mask(mask: ArrayLike, *, method: SkeletonMethod = "zhang") -> NDArray[np.bool_]:
    """Thin a crack mask to its one-pixel-wide, 8-connected skeleton.

    Parameters
    ----------
    mask : ndarray of shape (H, W) or (1, H, W), bool
        Crack mask. A single leading band is squeezed: scikit-image would thin a 3-D array in
        3-D (Lee) instead of 2-D.
    method : {'zhang', 'thin'}
        'zhang': ``skimage.morphology.skeletonize`` (Zhang-Suen), the project default.
        'thin': ``skimage.morphology.thin``, about 10x slower. Zhang-Suen erodes masks that are
        two pixels thick along a diagonal (a 4-connected staircase) from their ends, so a thin
        diagonal crack can lose much of its length; 'thin' keeps it. Masks at least three
        pixels wide are not affected.

    Returns
    -------
    skeleton : ndarray of shape (H, W), bool
    """
    m = as_2d(mask, "mask").astype(bool, copy=False)
    if not m.any():
        return np.zeros(m.shape, dtype=bool)
    if method == "zhang":
        return np.asarray(skeletonize(m), dtype=bool)
    if method == "thin":
        return np.asarray(thin(m), dtype=bool)
    raise ValueError(f"method is {method!r}; expected 'zhang' or 'thin'.")


@dataclass(frozen=True, eq=False)
class TileSkeleton:
    """Sparse skeleton pixels with their width and distance (a tile's core or a whole image).

    Attributes
    ----------
    rows, cols : ndarray of shape (n,), int64
        Pixel indices. :func:`extract_tile_skeleton` returns them relative to the tile array
        (halo included); :meth:`shifted` moves them to image indices.
    width_px : ndarray of shape (n,), float32, pixels
        Measured crack width (NaN when unknown).
    distance_px : ndarray of shape (n,), float32, pixels
        Distance-map value at the pixel (low = confident centreline).
    """

    rows: NDArray[np.int64]
    cols: NDArray[np.int64]
    width_px: NDArray[np.float32]
    distance_px: NDArray[np.float32]

    def __post_init__(self) -> None:
        fields = {
            "rows": np.int64,
            "cols": np.int64,
            "width_px": np.float32,
            "distance_px": np.float32,
        }
        sizes = set()
        for name, dtype in fields.items():
            value = np.asarray(getattr(self, name), dtype=dtype).reshape(-1)
            object.__setattr__(self, name, value)
            sizes.add(value.size)
        if len(sizes) != 1:
            raise ValueError(
                f"TileSkeleton arrays have different lengths {sorted(sizes)}; "
                "rows, cols, width_px and distance_px must align."
            )

    def __len__(self) -> int:
        return int(self.rows.size)

    @classmethod
    def empty(cls) -> TileSkeleton:
        """A skeleton with no pixels."""
        i, f = np.zeros(0, np.int64), np.zeros(0, np.float32)
        return cls(i, i, f, f)

    def shifted(self, row_off: int, col_off: int) -> TileSkeleton:
        """Return a copy with ``row_off`` and ``col_off`` added to the pixel indices."""
        return TileSkeleton(
            self.rows + int(row_off), self.cols + int(col_off), self.width_px, self.distance_px
        )

    @classmethod
    def concatenate(cls, parts: Sequence[TileSkeleton]) -> TileSkeleton:
        """Join skeletons (e.g. the shifted cores of all tiles of an image)."""
        if len(parts) == 0:
            return cls.empty()
        return cls(
            np.concatenate([p.rows for p in parts]),
            np.concatenate([p.cols for p in parts]),
            np.concatenate([p.width_px for p in parts]),
            np.concatenate([p.distance_px for p in parts]),
        )


def extract_tile_skeleton(
    distance: ArrayLike,
    body: ArrayLike | None,
    *,
    threshold_px: float,
    core: tuple[slice, slice],
    method: SkeletonMethod = "zhang",
) -> TileSkeleton:
    """Threshold, skeletonize and measure one tile; keep the skeleton pixels of its core.

    The whole tile (halo included) is skeletonized and measured, so with a halo a few crack
    widths wide the core result equals that of the untiled image.

    Parameters
    ----------
    distance : ndarray of shape (H, W) or (1, H, W), float32, pixels
        Distance map of the tile (core plus halo). NaN is nodata.
    body : ndarray of shape (H, W) or (1, H, W), float32 in [0, 1] or bool, optional
        Crack-body probability of the same tile. None: widths are NaN.
    threshold_px : float
        Crack = ``distance <= threshold_px``.
    core : (slice, slice)
        Row and column window of the core within the tile array.
    method : {'zhang', 'thin'}
        Thinning algorithm, see :func:`skeletonize_mask`.

    Returns
    -------
    TileSkeleton
        Skeleton pixels inside ``core``, rows/cols relative to the tile array (add the tile's
        origin in the image with :meth:`TileSkeleton.shifted`), in row-major order.
    """
    d = as_2d(distance, "distance")
    mask = threshold_distance(d, threshold_px=threshold_px)
    skel = skeletonize_mask(mask, method=method)
    row_start, row_stop, _ = core[0].indices(d.shape[0])
    col_start, col_stop, _ = core[1].indices(d.shape[1])
    core_skel = np.zeros_like(skel)
    core_skel[row_start:row_stop, col_start:col_stop] = skel[row_start:row_stop, col_start:col_stop]
    rows, cols = np.nonzero(core_skel)
    if body is None:
        width = np.full(rows.size, np.nan, dtype=np.float32)
    else:
        width = measure_width_px(body, skel, at=(rows, cols))
    return TileSkeleton(rows, cols, width, d[rows, cols])
