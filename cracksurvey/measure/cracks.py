"""Crack and branch measurements: length, width, orientation, confidence; the layer tables.

Input: a crack network in pixel space (:class:`cracksurvey.vectorize.network.CrackNetwork`);
output: the attribute tables and geometries of the ``cracks`` and ``crack_branches`` layers
(:data:`CRACK_COLUMNS`, :data:`BRANCH_COLUMNS`), in the image's map or façade coordinates.

- **Length** is the geometric length of the smoothed polylines, in pixels and in map units.
- **Width** statistics (mean, max, 95th percentile) are taken over the crack's pixels that
  have a width, measured per pixel in the workers from the image
  (:mod:`cracksurvey.measure.width`); pixels below the measurable limit have none and count in
  ``width_below_limit`` instead. ``width_sd_mm`` is the mean standard uncertainty of those
  widths: the crack's pixels share its depth estimate, so its mean width is not much surer.
- **Orientation** is the length-weighted mean axial direction of the segments in map
  coordinates, in [0, 180), 0 = +x (east), counter-clockwise.
- **Straightness** is the diameter of the smallest circle enclosing the crack over its length:
  1 for a straight line, lower the more the crack wanders or branches.
- **Confidence** of a pixel is ``clip(1 - distance_px / threshold_px, 0, 1)``: 1 on the
  predicted centreline, 0 at the threshold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import affine
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from numba import njit
from numpy.typing import NDArray

if TYPE_CHECKING:
    from cracksurvey.vectorize.network import CrackNetwork

__all__ = ["BRANCH_COLUMNS", "CRACK_COLUMNS", "empty_layers", "measure_cracks"]

#: Columns (and dtypes) of the branches layer, geometry excluded ('str' is pandas' string
#: dtype, object before pandas 3).
BRANCH_COLUMNS: dict[str, str] = {
    "crack_id": "int64",
    "branch_id": "int64",
    "kind": "str",
    "length_px": "float64",
    "length_m": "float64",
    "width_mean_mm": "float64",
    "width_max_mm": "float64",
    "width_p95_mm": "float64",
    "confidence": "float64",
}

#: Columns (and dtypes) of the cracks layer, geometry excluded.
CRACK_COLUMNS: dict[str, str] = {
    "crack_id": "int64",
    "length_px": "float64",
    "length_m": "float64",
    "width_mean_mm": "float64",
    "width_max_mm": "float64",
    "width_p95_mm": "float64",
    "width_sd_mm": "float64",
    "width_below_limit": "float64",
    "orientation_deg": "float64",
    "straightness": "float64",
    "n_branches": "int64",
    "n_junctions": "int64",
    "confidence": "float64",
    "verifier_score": "float64",
    "bridged": "bool",
    "surface": "str",
}


def _segment_sums(
    values: NDArray[np.float64], starts: NDArray[np.int64], stops: NDArray[np.int64]
) -> NDArray[np.float64]:
    """Sum of per-segment ``values`` (segment j joins vertex j and j+1) within each chain."""
    csum = np.concatenate([[0.0], np.cumsum(values)])
    return csum[stops - 1] - csum[starts]


@njit(cache=True)
def _group_stats(
    values: NDArray[np.float64], groups: NDArray[np.int64], n_groups: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:  # pragma: no cover
    """NaN-aware mean, max and 95th percentile (linear interpolation) of ``values`` per group."""
    count = np.zeros(n_groups + 1, dtype=np.int64)
    for i in range(values.size):
        if not np.isnan(values[i]):
            count[groups[i] + 1] += 1
    start = np.cumsum(count)
    fill = start[:-1].copy()
    buf = np.empty(start[-1], dtype=np.float64)
    for i in range(values.size):
        if not np.isnan(values[i]):
            buf[fill[groups[i]]] = values[i]
            fill[groups[i]] += 1
    mean = np.full(n_groups, np.nan)
    vmax = np.full(n_groups, np.nan)
    p95 = np.full(n_groups, np.nan)
    for g in range(n_groups):
        k = start[g + 1] - start[g]
        if k == 0:
            continue
        seg = np.sort(buf[start[g] : start[g + 1]])
        mean[g] = seg.mean()
        vmax[g] = seg[k - 1]
        pos = 0.95 * (k - 1)
        lo = int(np.floor(pos))
        hi = min(lo + 1, k - 1)
        p95[g] = seg[lo] + (seg[hi] - seg[lo]) * (pos - lo)
    return mean, vmax, p95


def empty_layers() -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Crack and branch layers without features, with their columns and dtypes."""
    cracks = gpd.GeoDataFrame(
        {k: pd.Series([], dtype=t) for k, t in CRACK_COLUMNS.items()},
        geometry=gpd.GeoSeries([], crs=None),
        crs=None,
    )
    branches = gpd.GeoDataFrame(
        {k: pd.Series([], dtype=t) for k, t in BRANCH_COLUMNS.items()},
        geometry=gpd.GeoSeries([], crs=None),
        crs=None,
    )
    return cracks, branches


def measure_cracks(
    network: CrackNetwork,
    *,
    transform: affine.Affine,
    threshold_px: float | None = None,
    pixel_size_m: float | None = None,
    width_sd_px: NDArray[np.float64] | None = None,
    below_limit: NDArray[np.bool_] | None = None,
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """The crack and branch layers of a crack network.

    Parameters
    ----------
    network : CrackNetwork
        Output of :func:`cracksurvey.vectorize.network.trace_cracks`.
    transform : affine.Affine
        Pixel-to-map transform; the centre of pixel ``(row, col)`` is at
        ``transform @ (col + 0.5, row + 0.5)``.
    threshold_px : float, optional
        Distance threshold that made the mask, for the confidence (None: NaN).
    pixel_size_m : float, optional
        Ground size of a pixel (metres) to convert widths to millimetres (None: NaN).
    width_sd_px, below_limit : ndarray of shape (n,), optional
        Per pixel of the network (``network.rows``): the width's standard uncertainty and
        whether the crack is below the measurable limit there (None: NaN, False).

    Returns
    -------
    cracks, branches : geopandas.GeoDataFrame
        See :func:`cracksurvey.vectorize.vectorize_skeleton`. No CRS: the caller sets it.
    """
    n_crack = network.n_crack
    if n_crack == 0:
        return empty_layers()
    path, starts, stops = network.path, network.starts, network.stops
    n_branch = starts.size
    n_vertex = stops - starts
    b_keep = network.crack_branches
    bc = network.branch_crack[b_keep]

    # Map coordinates of the (smoothed) vertices, pixel centres.
    t = transform
    col_c = network.vertices[:, 1] + 0.5
    row_c = network.vertices[:, 0] + 0.5
    x = t.a * col_c + t.b * row_c + t.c
    y = t.d * col_c + t.e * row_c + t.f

    # Per-segment quantities (segment j joins vertex j, j+1; the last of each branch is junk).
    dx, dy = np.diff(x), np.diff(y)
    seg_m = np.hypot(dx, dy)
    branch_length_px = network.branch_length_px
    branch_length_m = _segment_sums(seg_m, starts, stops)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos2 = np.where(seg_m > 0, (dx * dx - dy * dy) / seg_m, 0.0)
        sin2 = np.where(seg_m > 0, 2.0 * dx * dy / seg_m, 0.0)
    branch_cos2 = _segment_sums(cos2, starts, stops)
    branch_sin2 = _segment_sums(sin2, starts, stops)

    # Per-pixel values.
    width, distance = network.width_px, network.distance_px
    sd = np.full_like(width, np.nan) if width_sd_px is None else np.asarray(width_sd_px, float)
    below = np.zeros(width.size, bool) if below_limit is None else np.asarray(below_limit, bool)
    mm = float(pixel_size_m) * 1000.0 if pixel_size_m is not None else np.nan
    width_mm, sd_mm = width * mm, sd * mm
    if threshold_px is not None:
        confidence = np.clip(1.0 - distance / float(threshold_px), 0.0, 1.0)
    else:
        confidence = np.full_like(distance, np.nan)

    # Branch stats over the branch's pixels (cycles: closing pixel counted once).
    branch_of_vertex = np.repeat(np.arange(n_branch), n_vertex)
    vertex_ok = np.ones(path.size, dtype=bool)
    vertex_ok[(stops - 1)[network.is_cycle]] = False
    vb = branch_of_vertex[vertex_ok]
    vp = path[vertex_ok]
    b_wmean, b_wmax, b_wp95 = _group_stats(width_mm[vp], vb, n_branch)
    b_conf, _, _ = _group_stats(confidence[vp], vb, n_branch)

    # Crack stats over the crack's pixels.
    pix_crack = network.pixel_crack
    in_crack = pix_crack >= 0
    c_wmean, c_wmax, c_wp95 = _group_stats(width_mm[in_crack], pix_crack[in_crack], n_crack)
    c_sd, _, _ = _group_stats(
        np.where(np.isfinite(width_mm), sd_mm, np.nan)[in_crack], pix_crack[in_crack], n_crack
    )
    n_below = np.bincount(pix_crack[in_crack & below], minlength=n_crack)
    n_width = np.bincount(pix_crack[in_crack & np.isfinite(width)], minlength=n_crack)
    with np.errstate(invalid="ignore", divide="ignore"):
        below_share = np.where(n_below + n_width > 0, n_below / (n_below + n_width), np.nan)
    c_conf, _, _ = _group_stats(confidence[in_crack], pix_crack[in_crack], n_crack)
    c_len_px = np.bincount(bc, weights=branch_length_px[b_keep], minlength=n_crack)
    c_len_m = np.bincount(bc, weights=branch_length_m[b_keep], minlength=n_crack)
    c_cos2 = np.bincount(bc, weights=branch_cos2[b_keep], minlength=n_crack)
    c_sin2 = np.bincount(bc, weights=branch_sin2[b_keep], minlength=n_crack)
    orientation = np.mod(np.degrees(0.5 * np.arctan2(c_sin2, c_cos2)), 180.0)
    orientation[np.isclose(orientation, 180.0)] = 0.0
    n_branches = np.bincount(bc, minlength=n_crack)

    # Geometry: vertices of the kept branches, in b_keep order.
    kept_nv = n_vertex[b_keep]
    line_first = np.concatenate([[0], np.cumsum(kept_nv)[:-1]])
    order_v = np.repeat(starts[b_keep] - line_first, kept_nv) + np.arange(int(kept_nv.sum()))
    line_index = np.repeat(np.arange(b_keep.size), n_vertex[b_keep])
    lines = shapely.linestrings(np.column_stack([x[order_v], y[order_v]]), indices=line_index)
    multis = shapely.multilinestrings(lines, indices=bc)

    branches_gdf = gpd.GeoDataFrame(
        {
            "crack_id": (bc + 1).astype(np.int64),
            "branch_id": np.arange(1, b_keep.size + 1, dtype=np.int64),
            "kind": pd.Series(network.kind_names[b_keep], dtype="str"),
            "length_px": branch_length_px[b_keep],
            "length_m": branch_length_m[b_keep],
            "width_mean_mm": b_wmean[b_keep],
            "width_max_mm": b_wmax[b_keep],
            "width_p95_mm": b_wp95[b_keep],
            "confidence": b_conf[b_keep],
        },
        geometry=gpd.GeoSeries(lines, crs=None),
        crs=None,
    )
    cracks_gdf = gpd.GeoDataFrame(
        {
            "crack_id": np.arange(1, n_crack + 1, dtype=np.int64),
            "length_px": c_len_px,
            "length_m": c_len_m,
            "width_mean_mm": c_wmean,
            "width_max_mm": c_wmax,
            "width_p95_mm": c_wp95,
            "width_sd_mm": c_sd,
            "width_below_limit": below_share,
            "orientation_deg": orientation,
            # diameter of the smallest circle around the crack / its length: 1 for a straight line
            "straightness": np.minimum(
                1.0, 2.0 * shapely.minimum_bounding_radius(multis) / np.maximum(c_len_m, 1e-12)
            ),
            "n_branches": n_branches.astype(np.int64),
            "n_junctions": network.n_junctions,
            "confidence": c_conf,
            # the crack verifier's score (cracksurvey.verify), set by process
            "verifier_score": np.full(n_crack, np.nan),
            "bridged": network.bridged.copy(),
            # wall unless façade semantics say otherwise (cracksurvey.process.facade)
            "surface": pd.Series(["wall"] * n_crack, dtype="str"),
        },
        geometry=gpd.GeoSeries(multis, crs=None),
        crs=None,
    )
    return cracks_gdf, branches_gdf
