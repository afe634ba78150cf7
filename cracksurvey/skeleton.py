"""Skeleton stage: threshold a distance map, skeletonize the mask, keep the sparse skeleton.

Everything here runs on ONE tile (core window plus halo) held in memory as plain numpy arrays;
the engine maps :func:`extract_tile_skeleton` over tiles and concatenates the sparse results
(:meth:`TileSkeleton.concatenate`) for :func:`cracksurvey.vectorize.vectorize_skeleton`.

Glossary (see the README): the *distance map* is the model's predicted distance (pixels) to the
nearest crack centreline; the *mask* is ``distance <= threshold_px``; the *skeleton* is the
one-pixel-wide centreline of the mask; the *body* map is the probability (or mask) that a pixel
lies inside the crack body. Widths are measured from the image (:mod:`cracksurvey.measure.width`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from skimage.morphology import skeletonize, thin

from cracksurvey.measure.width import as_2d, skeleton_widths

__all__ = [
    "SKELETON_FIELDS",
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


#: The arrays of a :class:`TileSkeleton` and their dtypes.
SKELETON_FIELDS: dict[str, type] = {
    "rows": np.int64,
    "cols": np.int64,
    "width_px": np.float32,
    "distance_px": np.float32,
    "width_sd_px": np.float32,
    "below_limit": np.bool_,
    "limit_px": np.float32,
}


#: Arrays a skeleton may be made without (unknown: NaN, False).
_UNKNOWN_BY_DEFAULT = ("width_sd_px", "below_limit", "limit_px")


@dataclass(frozen=True, eq=False)
class TileSkeleton:
    """Sparse skeleton pixels with their width and distance (a tile's core or a whole image).

    Attributes
    ----------
    rows, cols : ndarray of shape (n,), int64
        Pixel indices. :func:`extract_tile_skeleton` returns them relative to the tile array
        (halo included); :meth:`shifted` moves them to image indices.
    width_px : ndarray of shape (n,), float32, pixels
        Crack width (:func:`cracksurvey.measure.width.skeleton_widths`): from the image; NaN
        where below the measurable limit or not measured.
    distance_px : ndarray of shape (n,), float32, pixels
        Distance-map value at the pixel (low = confident centreline).
    width_sd_px : ndarray of shape (n,), float32, pixels
        Standard uncertainty of the width; NaN where the width is not from the image (none, or
        the body map's for a crack wider than the image profiles measure).
    below_limit : ndarray of shape (n,), bool
        A crack is seen at the pixel but is narrower than the measurable limit.
    limit_px : ndarray of shape (n,), float32, pixels
        Measurable limit at the pixel; NaN where the image was not measured.

    The last three default to "unknown" (NaN, False) for skeletons made without them.
    """

    rows: NDArray[np.int64]
    cols: NDArray[np.int64]
    width_px: NDArray[np.float32]
    distance_px: NDArray[np.float32]
    width_sd_px: NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))
    below_limit: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))
    limit_px: NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))

    def __post_init__(self) -> None:
        n = np.asarray(self.rows).size
        sizes = set()
        for name, dtype in SKELETON_FIELDS.items():
            value = getattr(self, name)
            if np.size(value) == 0 and n > 0 and name in _UNKNOWN_BY_DEFAULT:
                value = np.zeros(n, bool) if dtype is np.bool_ else np.full(n, np.nan)
            value = np.asarray(value, dtype=dtype).reshape(-1)
            object.__setattr__(self, name, value)
            sizes.add(value.size)
        if len(sizes) != 1:
            raise ValueError(
                f"TileSkeleton arrays have different lengths {sorted(sizes)}; "
                f"{', '.join(SKELETON_FIELDS)} must align."
            )

    def __len__(self) -> int:
        return int(self.rows.size)

    def arrays(self) -> dict[str, NDArray]:
        """The arrays by name (:data:`SKELETON_FIELDS`)."""
        return {name: getattr(self, name) for name in SKELETON_FIELDS}

    @classmethod
    def empty(cls) -> TileSkeleton:
        """A skeleton with no pixels."""
        return cls(**{k: np.zeros(0, t) for k, t in SKELETON_FIELDS.items()})

    def take(self, index: ArrayLike) -> TileSkeleton:
        """The pixels ``index`` (an index array or a boolean mask), in that order."""
        pick = np.asarray(index)
        return TileSkeleton(**{k: v[pick] for k, v in self.arrays().items()})

    def shifted(self, row_off: int, col_off: int) -> TileSkeleton:
        """Return a copy with ``row_off`` and ``col_off`` added to the pixel indices."""
        arrays = self.arrays()
        arrays["rows"] = self.rows + int(row_off)
        arrays["cols"] = self.cols + int(col_off)
        return TileSkeleton(**arrays)

    @classmethod
    def concatenate(cls, parts: Sequence[TileSkeleton]) -> TileSkeleton:
        """Join skeletons (e.g. the shifted cores of all tiles of an image)."""
        if len(parts) == 0:
            return cls.empty()
        return cls(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in SKELETON_FIELDS})


def extract_tile_skeleton(
    distance: ArrayLike,
    body: ArrayLike | None,
    *,
    threshold_px: float,
    core: tuple[slice, slice],
    method: SkeletonMethod = "zhang",
    grey: ArrayLike | None = None,
    origin: tuple[int, int] = (0, 0),
) -> TileSkeleton:
    """Threshold, skeletonize and measure one tile; keep the skeleton pixels of its core.

    The whole tile (halo included) is skeletonized and measured, so with a halo a few crack
    widths wide (for the widths from the image: 96 px, docs/method.md) the core result equals
    that of the untiled image.

    Parameters
    ----------
    distance : ndarray of shape (H, W) or (1, H, W), float32, pixels
        Distance map of the tile (core plus halo). NaN is nodata.
    body : ndarray of shape (H, W) or (1, H, W), float32 in [0, 1] or bool, optional
        Crack-body probability of the same tile.
    threshold_px : float
        Crack = ``distance <= threshold_px``.
    core : (slice, slice)
        Row and column window of the core within the tile array.
    method : {'zhang', 'thin'}
        Thinning algorithm, see :func:`skeletonize_mask`.
    grey : ndarray of shape (H, W), float, optional
        The tile's brightness for the width from the image (NaN: nodata or outside the
        image). None: widths from the body map (:func:`cracksurvey.measure.width.
        skeleton_widths`).
    origin : (int, int)
        Image position of the tile array's pixel (0, 0), for the width's sampling lattice.

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
    w = skeleton_widths(skel, (rows, cols), grey=grey, body=body, origin=origin)
    return TileSkeleton(
        rows, cols, w.width_px, d[rows, cols], w.width_sd_px, w.below_limit, w.limit_px
    )
