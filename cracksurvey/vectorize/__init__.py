"""Vectorize stage: sparse skeleton pixels of a whole image -> crack and branch layers.

The input is the sparse list of skeleton pixels of the whole image (the concatenated cores of
all tiles, see :class:`cracksurvey.skeleton.TileSkeleton`), so cracks that cross tile borders
come out as single features and no image-sized array is ever allocated.

:func:`vectorize_skeleton` is the stage: the pixel graph and its branches
(:mod:`~cracksurvey.vectorize.graph`), spur pruning, gap bridging, cracks and smoothed
polylines (:mod:`~cracksurvey.vectorize.network`), then the measurements of every crack and
branch in map coordinates (:mod:`cracksurvey.measure.cracks`).
"""

from __future__ import annotations

import affine
import geopandas as gpd
import numpy as np
from numpy.typing import ArrayLike, NDArray

from cracksurvey.measure.cracks import BRANCH_COLUMNS, CRACK_COLUMNS, measure_cracks
from cracksurvey.vectorize.graph import BRANCH_KINDS, BranchKind
from cracksurvey.vectorize.network import CrackNetwork, trace_cracks

__all__ = [
    "BRANCH_COLUMNS",
    "BRANCH_KINDS",
    "CRACK_COLUMNS",
    "BranchKind",
    "CrackNetwork",
    "trace_cracks",
    "vectorize_skeleton",
]


def vectorize_skeleton(
    rows: ArrayLike,
    cols: ArrayLike,
    *,
    transform: affine.Affine,
    width_px: ArrayLike | None = None,
    distance_px: ArrayLike | None = None,
    threshold_px: float | None = None,
    pixel_size_m: float | None = None,
    min_spur_px: float = 10.0,
    min_crack_length_px: float = 10.0,
    smoothing_px: float = 3.0,
    bridged_px: ArrayLike | None = None,
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Turn the sparse skeleton pixels of a whole image into crack and branch layers.

    Parameters
    ----------
    rows, cols : ndarray of shape (n,), int
        Skeleton pixel indices in the image (duplicates are ignored, first kept).
    transform : affine.Affine
        Pixel-to-map transform of the image; the centre of pixel ``(row, col)`` is at
        ``transform @ (col + 0.5, row + 0.5)``. For an image without georeferencing pass
        ``Affine.identity()`` and read the ``*_m`` lengths as pixels.
    width_px : ndarray of shape (n,), float, pixels, optional
        Measured crack width per pixel (NaN: unknown). None: width columns are NaN.
    distance_px : ndarray of shape (n,), float, pixels, optional
        Distance-map value per pixel, for the confidence. None: confidence is NaN.
    threshold_px : float, optional
        Distance threshold that made the mask; required with ``distance_px``.
    pixel_size_m : float, optional
        Ground size of a pixel (metres) to convert widths to millimetres. None: widths in mm
        are NaN (length_m still follows ``transform``).
    min_spur_px : float
        Junction-tip branches (and loops from a junction back to itself) with a chain length
        below this (pixels) are pruned, shortest first, as long as their junction keeps two
        branches. The graph is then rebuilt, so junctions left with two branches disappear and
        their branches merge; this repeats until nothing is pruned.
    min_crack_length_px : float
        Cracks (8-connected components) shorter than this (pixels, smoothed length) are
        dropped. Components of a single pixel are always dropped (they have no line).
    smoothing_px : float
        Half-width, in skeleton pixels along the chain, of the moving average applied to the
        pixel-centre coordinates of each branch before measuring length; branch ends stay
        fixed. It removes the staircase of 8-connected chains, which otherwise overestimates
        length by up to 8 % at oblique angles. 0 switches smoothing off (exact pixel-step
        lengths: 1 or sqrt 2 per step).
    bridged_px : ndarray of shape (n,), bool, optional
        Pixels that bridge a gap between fragments (:mod:`cracksurvey.gaps`); a crack holding
        any is flagged ``bridged``.

    Returns
    -------
    cracks : geopandas.GeoDataFrame
        One MultiLineString per crack (connected skeleton component), columns
        :data:`CRACK_COLUMNS`: ``crack_id`` (1..N, row-major order of the first pixel),
        ``length_px``, ``length_m`` (geometric length of the smoothed polylines, pixels and
        map units), ``width_mean_mm``, ``width_max_mm``, ``width_p95_mm`` (over the crack's
        pixels, NaN-aware), ``orientation_deg`` (length-weighted mean axial direction of the
        segments in map coordinates, [0, 180), 0 = +x (east), counter-clockwise),
        ``n_branches``, ``n_junctions`` (nodes where >= 3 branch ends meet),
        ``confidence`` (mean over the pixels of ``clip(1 - distance_px / threshold_px,
        0, 1)``: 1 on the predicted centreline, 0 at the threshold), ``bridged`` (the crack
        joins fragments across a gap, :mod:`cracksurvey.gaps`). No CRS: the caller sets it.
    branches : geopandas.GeoDataFrame
        One LineString per branch, columns :data:`BRANCH_COLUMNS`; ``kind`` is one of
        'junction-junction', 'junction-tip', 'tip-tip', 'cycle'. Junction ends sit at the
        centroid of the junction's pixels, so branches of a crack touch.
    """
    rows_a = np.asarray(rows, dtype=np.int64).reshape(-1)
    cols_a = np.asarray(cols, dtype=np.int64).reshape(-1)
    if rows_a.size != cols_a.size:
        raise ValueError(
            f"rows has {rows_a.size} values but cols has {cols_a.size}; they must pair up."
        )
    width = _optional_values(width_px, rows_a.size, "width_px")
    distance = _optional_values(distance_px, rows_a.size, "distance_px")
    if distance_px is not None and threshold_px is None:
        raise ValueError(
            "distance_px was given without threshold_px; pass the threshold that made the mask "
            "so the confidence can be computed."
        )
    network = trace_cracks(
        rows_a,
        cols_a,
        width,
        distance,
        min_spur_px=min_spur_px,
        min_crack_length_px=min_crack_length_px,
        smoothing_px=smoothing_px,
        bridged_px=None if bridged_px is None else np.asarray(bridged_px, bool).reshape(-1),
    )
    return measure_cracks(
        network, transform=transform, threshold_px=threshold_px, pixel_size_m=pixel_size_m
    )


def _optional_values(values: ArrayLike | None, n: int, name: str) -> NDArray[np.float64]:
    if values is None:
        return np.full(n, np.nan)
    out = np.asarray(values, dtype=np.float64).reshape(-1)
    if out.size != n:
        raise ValueError(
            f"{name} has {out.size} values but there are {n} skeleton pixels; "
            "pass one value per (row, col) pixel."
        )
    return out
