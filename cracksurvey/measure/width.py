"""Crack width at skeleton pixels: from the image (the default) or from the crack-body map.

:func:`skeleton_widths` is what a tile measures (:func:`cracksurvey.skeleton.
extract_tile_skeleton`, in the engine's workers): the width from the image's intensity
profiles (:mod:`cracksurvey.measure.width_profile`) with its uncertainty and measurable limit,
and the body-map width only where the crack is wider than the profiles measure.

:func:`measure_width_px` measures on the body map, the network's second head (the probability
that a pixel lies inside the crack body): across the crack, along the normal of the local
skeleton direction, the distance between the two crossings of the map's 0.5 level (sub-pixel,
bilinear sampling), with a Euclidean-distance fallback where a profile fails. The evaluation
also uses it on ground-truth masks. docs/method.md ("Crack width") describes both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

__all__ = ["WIDTH_METHOD", "SkeletonWidths", "as_2d", "measure_width_px", "skeleton_widths"]

logger = logging.getLogger(__name__)

#: Version of the width measurement, part of the prediction's cache key: a survey processed
#: before the method changed is measured again (2: the depth searched at 1.5 % steps; 3: the
#: fits see 1 px of the wall stretches beside the band's tails, not all 3).
WIDTH_METHOD = 3


def as_2d(array: ArrayLike, name: str) -> NDArray:
    """Return ``array`` as a 2-D ``(rows, cols)`` array, squeezing a single leading band."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(
            f"{name} has shape {a.shape}; expected (rows, cols) or (1, rows, cols). "
            "Pass a single band."
        )
    return a


def _local_normals(
    skeleton: NDArray[np.bool_],
    rows: NDArray[np.intp],
    cols: NDArray[np.intp],
    radius_px: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Unit normal (row, col components) of the skeleton at the given skeleton pixels.

    The local direction is the principal axis (PCA) of the skeleton pixels within a disc of
    ``radius_px`` around each pixel; the normal is perpendicular to it.
    """
    r = int(radius_px)
    padded = np.pad(skeleton, r, mode="constant", constant_values=False)
    n = rows.size
    s_n = np.zeros(n)
    s_r = np.zeros(n)
    s_c = np.zeros(n)
    s_rr = np.zeros(n)
    s_cc = np.zeros(n)
    s_rc = np.zeros(n)
    for dr in range(-r, r + 1):
        for dc in range(-r, r + 1):
            if dr * dr + dc * dc > r * r or (dr == 0 and dc == 0):
                continue
            hit = padded[rows + r + dr, cols + r + dc].astype(np.float64)
            s_n += hit
            s_r += hit * dr
            s_c += hit * dc
            s_rr += hit * dr * dr
            s_cc += hit * dc * dc
            s_rc += hit * dr * dc
    # Include the pixel itself (offset 0) in the statistics.
    s_n += 1.0
    mean_r = s_r / s_n
    mean_c = s_c / s_n
    cov_rr = s_rr / s_n - mean_r**2
    cov_cc = s_cc / s_n - mean_c**2
    cov_rc = s_rc / s_n - mean_r * mean_c
    theta = 0.5 * np.arctan2(2.0 * cov_rc, cov_rr - cov_cc)  # direction angle in (row, col)
    # Unit tangent is (cos theta, sin theta) in (row, col); the normal is its rotation.
    return -np.sin(theta), np.cos(theta)


def _edge_distance(
    body: NDArray[np.float32],
    rows: NDArray[np.intp],
    cols: NDArray[np.intp],
    normal_r: NDArray[np.float64],
    normal_c: NDArray[np.float64],
    *,
    iso_level: float,
    max_distance_px: float,
    step_px: float,
) -> NDArray[np.float64]:
    """Sub-pixel distance from each pixel centre to the first ``iso_level`` crossing.

    Marches along ``(normal_r, normal_c)`` sampling ``body`` with bilinear interpolation and
    interpolates linearly between the last sample above and the first below the level. NaN where
    no crossing is found within ``max_distance_px``.
    """
    n = rows.size
    out = np.full(n, np.nan)
    todo = np.arange(n)
    prev_val = body[rows, cols].astype(np.float64)
    n_steps = int(np.ceil(max_distance_px / step_px))
    chunk = 16  # samples per profile per round: most edges are found in the first one
    start = 1
    while todo.size and start <= n_steps:
        stop = min(start + chunk, n_steps + 1)
        chunk = 32
        t = np.arange(start, stop) * step_px  # (k,)
        pr = rows[todo, None] + normal_r[todo, None] * t[None, :]
        pc = cols[todo, None] + normal_c[todo, None] * t[None, :]
        vals = ndimage.map_coordinates(
            body, [pr.ravel(), pc.ravel()], order=1, mode="constant", cval=0.0, prefilter=False
        ).reshape(pr.shape)
        below = vals < iso_level
        found = below.any(axis=1)
        k = np.argmax(below, axis=1)
        idx = np.nonzero(found)[0]
        if idx.size:
            kf = k[idx]
            v1 = vals[idx, kf]
            v0 = np.where(kf > 0, vals[idx, np.maximum(kf - 1, 0)], prev_val[todo[idx]])
            t1 = t[kf]
            dv = v0 - v1
            frac = np.where(dv > 0, (v0 - iso_level) / np.where(dv > 0, dv, 1.0), 0.0)
            out[todo[idx]] = t1 - step_px + np.clip(frac, 0.0, 1.0) * step_px
        keep = ~found
        prev_val[todo[keep]] = vals[keep, -1]
        todo = todo[keep]
        start = stop
    return out


def _edt_at(
    mask: NDArray[np.bool_], rows: NDArray[np.intp], cols: NDArray[np.intp], *, margin_px: int = 48
) -> NDArray[np.float64]:
    """Euclidean distance from ``mask`` pixels at ``(rows, cols)`` to the nearest background pixel.

    Outside the array counts as background. Exact, but computed on small boxes instead of the
    whole tile (a tile-sized EDT cost more than the skeleton): either one box around each
    queried pixel or, when that is less work, their common bounding box, each grown by
    ``margin_px``. Inside a box the outside is taken as foreground, which can only lengthen
    distances, so a value shorter than the pixel's distance to the box's inner edges is the
    true one; any other pixel is recomputed on the whole array.
    """
    h, w = mask.shape
    m = margin_px
    box_area = (min(int(rows.max()) + m + 1, h) - max(int(rows.min()) - m, 0)) * (
        min(int(cols.max()) + m + 1, w) - max(int(cols.min()) - m, 0)
    )
    if rows.size * (2 * m + 1) ** 2 < box_area:  # scattered pixels: one small box each
        edt = np.empty(rows.size)
        room = np.empty(rows.size)
        for i in range(rows.size):
            e, rm = _edt_in_box(mask, rows[i : i + 1], cols[i : i + 1], margin_px=m)
            edt[i], room[i] = e[0], rm[0]
    else:
        edt, room = _edt_in_box(mask, rows, cols, margin_px=m)
    unsure = edt >= room
    if unsure.any():
        full = ndimage.distance_transform_edt(np.pad(mask, 1, constant_values=False))[1:-1, 1:-1]
        edt[unsure] = full[rows[unsure], cols[unsure]]
    return edt


def _edt_in_box(
    mask: NDArray[np.bool_], rows: NDArray[np.intp], cols: NDArray[np.intp], *, margin_px: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """EDT at the pixels within their bounding box grown by ``margin_px``, and the room to trust it.

    Returns ``(edt, room)``: ``edt`` is exact where ``edt < room``.
    """
    h, w = mask.shape
    r0, r1 = max(int(rows.min()) - margin_px, 0), min(int(rows.max()) + margin_px + 1, h)
    c0, c1 = max(int(cols.min()) - margin_px, 0), min(int(cols.max()) + margin_px + 1, w)
    # Pad with background on the array's own borders, with foreground on the box's inner edges.
    pad = ((1, 1), (1, 1))
    box = np.pad(mask[r0:r1, c0:c1], pad, constant_values=False)
    if r0 > 0:
        box[0, :] = True
    if r1 < h:
        box[-1, :] = True
    if c0 > 0:
        box[:, 0] = True
    if c1 < w:
        box[:, -1] = True
    edt = ndimage.distance_transform_edt(box)[1:-1, 1:-1][rows - r0, cols - c0]
    inf = np.inf
    room = np.minimum.reduce(
        [
            rows - r0 + 1 if r0 > 0 else np.full(rows.shape, inf),
            r1 - rows if r1 < h else np.full(rows.shape, inf),
            cols - c0 + 1 if c0 > 0 else np.full(rows.shape, inf),
            c1 - cols if c1 < w else np.full(rows.shape, inf),
        ]
    )
    return edt, room


def measure_width_px(
    body: ArrayLike,
    skeleton: ArrayLike,
    *,
    at: tuple[ArrayLike, ArrayLike] | None = None,
    iso_level: float = 0.5,
    direction_radius_px: int = 5,
    max_width_px: float = 64.0,
    step_px: float = 0.2,
) -> NDArray[np.float32]:
    """Measure the crack width, in pixels, at skeleton pixels from the body map.

    Method: the local direction of the skeleton is the principal axis of the skeleton pixels
    within ``direction_radius_px``; the body map is sampled with bilinear interpolation along the
    normal on both sides of the pixel centre; on each side the first crossing of ``iso_level`` is
    located with sub-pixel linear interpolation; the width is the sum of the two distances.
    Where a profile fails (the body is below the level at the skeleton pixel, or no crossing
    within ``max_width_px / 2``), the width falls back to ``2 * EDT - 1``, the Euclidean distance
    from the pixel centre to the nearest background pixel centre of the body mask
    (``body >= iso_level``) doubled, minus the one pixel that spans the two half-pixels
    between the pixel centres and the edges. Skeleton pixels outside the body mask get NaN.

    A bool mask is treated as a body map with values 0 and 1, so the 0.5 crossing lies halfway
    between the last pixel centre inside and the first outside: a band of pixel centres with
    ``|signed distance| <= w / 2`` measures ``w`` on average.

    Parameters
    ----------
    body : ndarray of shape (H, W) or (1, H, W), float in [0, 1] or bool
        Crack-body probability (or mask). NaN is nodata and read as 0.
    skeleton : ndarray of shape (H, W) or (1, H, W), bool
        Skeleton of the crack mask on the same grid.
    at : (rows, cols) of int arrays, optional
        Skeleton pixels to measure (default: all, in ``np.nonzero(skeleton)`` order). The
        direction still uses the whole skeleton, so measuring only the core window of a tile
        gives the same numbers as measuring everything.
    iso_level : float
        Body level of the crack edge.
    direction_radius_px : int
        Radius (pixels) of the neighbourhood used for the local skeleton direction.
    max_width_px : float
        Largest width found by profiling (pixels); wider cracks use the EDT fallback.
    step_px : float
        Sampling step along the normal (pixels).

    Returns
    -------
    width_px : ndarray of shape (n,), float32, pixels
        Width at each requested skeleton pixel.
    """
    skel = as_2d(skeleton, "skeleton").astype(bool, copy=False)
    b = as_2d(body, "body")
    if b.shape != skel.shape:
        raise ValueError(
            f"body has shape {b.shape} but skeleton has shape {skel.shape}; "
            "both must be on the same tile grid."
        )
    b = b.astype(np.float32, copy=False)
    if np.isnan(b).any():
        b = np.nan_to_num(b, nan=0.0)  # a copy: the caller's map keeps its NaN
    if at is None:
        rows, cols = np.nonzero(skel)
    else:
        rows = np.asarray(at[0], dtype=np.intp)
        cols = np.asarray(at[1], dtype=np.intp)
    if rows.size == 0:
        return np.zeros(0, dtype=np.float32)
    normal_r, normal_c = _local_normals(skel, rows, cols, direction_radius_px)
    kwargs = dict(iso_level=iso_level, max_distance_px=max_width_px / 2.0 + 1.0, step_px=step_px)
    plus = _edge_distance(b, rows, cols, normal_r, normal_c, **kwargs)
    minus = _edge_distance(b, rows, cols, -normal_r, -normal_c, **kwargs)
    width = plus + minus
    inside = b[rows, cols] >= iso_level
    width[~inside] = np.nan
    failed = inside & ~np.isfinite(width)
    if failed.any():
        edt = _edt_at(b >= iso_level, rows[failed], cols[failed])
        width[failed] = np.maximum(2.0 * edt - 1.0, 1.0)
        logger.debug("width: %d of %d profiles fell back to the EDT", failed.sum(), rows.size)
    return width.astype(np.float32)


@dataclass(frozen=True, eq=False)
class SkeletonWidths:
    """Widths at skeleton pixels (:func:`skeleton_widths`), float32 pixels unless said.

    Attributes
    ----------
    width_px : ndarray of shape (n,)
        Crack width; NaN where below the measurable limit or not measured.
    width_sd_px : ndarray of shape (n,)
        Standard uncertainty of ``width_px``; NaN where the width is not from the image.
    below_limit : ndarray of shape (n,), bool
        A crack is seen there but narrower than the limit.
    limit_px : ndarray of shape (n,)
        Measurable limit at the pixel (:func:`~cracksurvey.measure.width_profile.
        measurable_limit_px`); NaN where not measured from the image.
    """

    width_px: NDArray[np.float32]
    width_sd_px: NDArray[np.float32]
    below_limit: NDArray[np.bool_]
    limit_px: NDArray[np.float32]


def skeleton_widths(
    skeleton: ArrayLike,
    at: tuple[ArrayLike, ArrayLike],
    *,
    grey: ArrayLike | None,
    body: ArrayLike | None,
    origin: tuple[int, int] = (0, 0),
    max_width_px: float = 40.0,
) -> SkeletonWidths:
    """Widths of a tile's skeleton at the pixels ``at`` (its core).

    From the image (``grey``): :func:`~cracksurvey.measure.width_profile.
    measure_width_from_image` over all the tile's skeleton pixels, its 8-connected components
    as cracks, the samples chosen in image coordinates (``origin``: the tile's position). The
    body-map width (:func:`measure_width_px`) is kept only where the image gives no answer and
    the body is at least ``max_width_px`` wide: a dark band wider than the profiles measure.
    Elsewhere a pixel the image cannot measure (no darker band, the image's border, nodata)
    has no width. Without ``grey``, the body-map width everywhere (NaN without a body).

    Parameters
    ----------
    skeleton : ndarray of shape (H, W), bool
        The tile's skeleton, halo included.
    at : (rows, cols) of int arrays
        Skeleton pixels to measure.
    grey : ndarray of shape (H, W), float, optional
        The tile's brightness (mean of the bands); NaN is nodata or outside the image.
    body : ndarray of shape (H, W), float, optional
        The crack-body map.
    origin : (int, int)
        Image position of the tile's pixel (0, 0).
    max_width_px : float
        Widest crack the image profiles measure (pixels).
    """
    skel = as_2d(skeleton, "skeleton").astype(bool, copy=False)
    rows = np.asarray(at[0], dtype=np.intp)
    cols = np.asarray(at[1], dtype=np.intp)
    n = rows.size
    nan = np.full(n, np.nan, np.float32)
    if grey is None or n == 0:
        width = nan.copy() if body is None else measure_width_px(body, skel, at=(rows, cols))
        return SkeletonWidths(width, nan.copy(), np.zeros(n, bool), nan.copy())
    from cracksurvey.measure.profile_neighbours import pixel_components
    from cracksurvey.measure.width_profile import measure_width_from_image

    all_r, all_c = np.nonzero(skel)  # row-major: ``at`` is found by its linear index
    w = skel.shape[1]
    index = np.searchsorted(all_r * w + all_c, rows * w + cols)
    targets = np.zeros(all_r.size, bool)
    targets[index] = True
    labels = pixel_components(all_r.astype(np.int64), all_c.astype(np.int64))
    m = measure_width_from_image(
        as_2d(grey, "grey"),
        all_r,
        all_c,
        labels=labels,
        origin=origin,
        targets=targets,
        max_width_px=max_width_px,
    )
    width = m.width_px[index].astype(np.float32)
    unmeasured = ~m.measured[index]
    if body is not None and unmeasured.any():
        body_width = measure_width_px(body, skel, at=(rows[unmeasured], cols[unmeasured]))
        width[unmeasured] = np.where(body_width >= max_width_px, body_width, np.nan)
    return SkeletonWidths(
        width,
        m.width_sd_px[index].astype(np.float32),
        m.below_limit[index].copy(),
        m.limit_px[index].astype(np.float32),
    )
