"""Crack pattern continuity without ground truth: cracks per patch (CPP) and friends.

Used by every production run (the per-building summaries) and, with a ground truth beside the
prediction, by :mod:`cracksurvey.evaluation`. All functions are pure: 2-D arrays in, numbers out.

CPP (cracks per patch) counts the crack fragments (connected components of the crack mask) in
each patch of a non-overlapping grid; a fragmented prediction raises it. Our definition and
its parameters are in docs/method.md ("Continuity: CPP", departure D20).

Conventions
-----------
mask
    ``ndarray of shape (H, W)``, bool (or integer, non-zero = crack), True on crack pixels. A
    ``(1, H, W)`` array is accepted and squeezed. Float arrays are refused so that an
    unthresholded distance map is never read as a mask.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from cracksurvey.measure.width import as_2d
from cracksurvey.skeleton import skeletonize_mask

__all__ = [
    "Connectivity",
    "as_mask",
    "continuity_stats",
    "count_fragments",
    "cracks_per_patch",
    "patch_grid",
    "patch_origins",
    "valid_mask",
]

Connectivity = Literal[4, 8]


def as_mask(mask: ArrayLike, name: str) -> NDArray[np.bool_]:
    """Return ``mask`` as a 2-D bool array, squeezing a leading band axis of size 1."""
    arr = as_2d(mask, name)
    if arr.dtype == np.bool_:
        return arr
    if np.issubdtype(arr.dtype, np.integer):
        return arr != 0
    raise TypeError(
        f"{name} has dtype {arr.dtype}; expected a bool mask. Threshold a distance map first "
        "(mask = distance <= tau)."
    )


def _structure(connectivity: int) -> NDArray[np.bool_]:
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity is {connectivity!r}; expected 4 or 8.")
    return ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)


def _label(mask: NDArray[np.bool_], connectivity: int) -> tuple[NDArray[np.int32], int]:
    labels, n = ndimage.label(mask, structure=_structure(connectivity))
    return np.asarray(labels, dtype=np.int32), int(n)


def _skeleton_lengths(labels: NDArray[np.int32], n: int) -> NDArray[np.float64]:
    """Skeleton length (px) of each labelled component, shape (n + 1,), index 0 = background.

    The length is the polyline length through skeleton pixel centres: 1 per orthogonal
    neighbour pair, sqrt(2) per diagonal pair unless an orthogonal detour through a third
    skeleton pixel exists (so an L-corner counts 2, not 2 + sqrt(2)). A single-pixel skeleton
    has length 0.
    """
    lengths = np.zeros(n + 1)
    sk = skeletonize_mask(labels > 0)
    lab = np.where(sk, labels, 0)

    def add(a: NDArray[np.int32], b: NDArray[np.int32], keep: NDArray[np.bool_], w: float) -> None:
        same = keep & (a > 0) & (a == b)
        lengths[:] += np.bincount(a[same], minlength=n + 1) * w

    ones = np.ones_like(sk)
    add(lab[:, :-1], lab[:, 1:], ones[:, :-1], 1.0)
    add(lab[:-1, :], lab[1:, :], ones[:-1, :], 1.0)
    # down-right: detours via (r, c+1) or (r+1, c)
    add(lab[:-1, :-1], lab[1:, 1:], ~(sk[:-1, 1:] | sk[1:, :-1]), math.sqrt(2.0))
    # down-left: detours via (r, c-1) or (r+1, c)
    add(lab[:-1, 1:], lab[1:, :-1], ~(sk[:-1, :-1] | sk[1:, 1:]), math.sqrt(2.0))
    return lengths


def count_fragments(
    mask: NDArray[np.bool_],
    *,
    connectivity: int,
    min_area_px: float,
    min_skeleton_length_px: float | None,
) -> int:
    """Connected components of ``mask`` with area ``>= min_area_px`` (and, when given, a
    skeleton length ``>= min_skeleton_length_px``), pixels."""
    if not mask.any():  # most patches of a survey image: no labelling needed
        return 0
    labels, n = _label(mask, connectivity)
    if n == 0:
        return 0
    keep = np.bincount(labels.ravel(), minlength=n + 1)[1:] >= min_area_px
    if min_skeleton_length_px is not None:
        keep &= _skeleton_lengths(labels, n)[1:] >= min_skeleton_length_px
    return int(keep.sum())


def patch_grid(
    shape: tuple[int, int], patch_px: int, valid: NDArray[np.bool_] | None
) -> list[tuple[int, int]]:
    """Origins ``(row, col)`` of the counted patches (see :func:`patch_origins`)."""
    if patch_px < 1:
        raise ValueError(f"patch_px is {patch_px!r}; expected a positive integer.")
    rows, cols = (int(n) for n in shape)
    if rows == 0 or cols == 0:
        return []
    row0 = np.arange(0, rows, patch_px)
    col0 = np.arange(0, cols, patch_px)
    if valid is None:
        inside = np.outer(
            np.minimum(rows, row0 + patch_px) - row0, np.minimum(cols, col0 + patch_px) - col0
        )
    else:  # valid pixels per patch: column sums of each row of patches, summed per patch
        as_bytes = valid.view(np.uint8)
        inside = np.stack(
            [
                np.add.reduceat(as_bytes[r : r + patch_px].sum(axis=0, dtype=np.int64), col0)
                for r in row0
            ]
        )
    counted_r, counted_c = np.nonzero(2 * inside >= patch_px * patch_px)  # row-major
    return [(int(row0[i]), int(col0[j])) for i, j in zip(counted_r, counted_c)]


def valid_mask(valid: ArrayLike | None, shape: tuple[int, ...]) -> NDArray[np.bool_] | None:
    """``valid`` as a bool mask of ``shape`` (None stays None)."""
    if valid is None:
        return None
    v = as_mask(valid, "valid")
    if v.shape != shape:
        raise ValueError(f"valid has shape {v.shape}; expected the mask shape {shape}.")
    return v


def patch_origins(
    shape: tuple[int, int], *, patch_px: int = 256, valid: ArrayLike | None = None
) -> NDArray[np.int64]:
    """Top-left ``(row, col)`` of the patches that CPP counts, in row-major grid order.

    The grid is non-overlapping and aligned at the image origin. A patch (including a partial
    patch at the right or bottom border) is counted if at least 50 % of its ``patch_px**2``
    pixels are inside the image, or inside ``valid`` when given.

    Parameters
    ----------
    shape : (int, int)
        Image shape ``(H, W)``, pixels.
    patch_px : int, default 256
        Patch side, pixels.
    valid : ndarray of shape (H, W), bool, optional
        Pixels that belong to the surveyed area (e.g. the façade frame).

    Returns
    -------
    ndarray of shape (n_patches, 2), int64
        Same order as :func:`cracks_per_patch`. ``n_patches`` may be 0.
    """
    rows, cols = (int(s) for s in shape)
    v = valid_mask(valid, (rows, cols))
    return np.array(patch_grid((rows, cols), patch_px, v), dtype=np.int64).reshape(-1, 2)


def cracks_per_patch(
    mask: ArrayLike,
    *,
    patch_px: int = 256,
    min_area_px: float = 50,
    min_skeleton_length_px: float | None = None,
    connectivity: Connectivity = 8,
    valid: ArrayLike | None = None,
) -> NDArray[np.int64]:
    """Number of crack fragments in each counted patch (CPP, docs/method.md, D20).

    A fragment is a connected component of ``mask`` inside one patch; a crack that crosses a
    patch border is a fragment of each patch it enters (as in Forest et al. 2024, who count
    components per 256 x 256 patch). Pixels outside ``valid`` are ignored.

    Parameters
    ----------
    mask : ndarray of shape (H, W), bool
        Crack mask (prediction after tau, or a GT crack-body mask).
    patch_px : int, default 256
        Patch side, pixels. See :func:`patch_origins` for which patches are counted.
    min_area_px : float, default 50
        Keep fragments whose area inside the patch is ``>=`` this, pixels. Use 0 to disable.
        Note that a 1-px-wide GT skeleton has area = length: use the skeleton-length rule
        (``min_area_px=0, min_skeleton_length_px=10``) for skeleton annotations.
    min_skeleton_length_px : float, optional
        Also keep only fragments whose skeleton polyline length inside the patch is ``>=``
        this, pixels (a single-pixel skeleton has length 0). Both size rules apply when both
        are set; pass ``min_area_px=0`` to filter by skeleton length alone.
    connectivity : {4, 8}, default 8
        Pixel connectivity of a fragment.
    valid : ndarray of shape (H, W), bool, optional
        Surveyed area; decides which patches count and masks out crack pixels outside it.

    Returns
    -------
    ndarray of shape (n_patches,), int64
        Fragment count per counted patch, in the order of :func:`patch_origins`.
    """
    m = as_mask(mask, "mask")
    v = valid_mask(valid, m.shape)
    if v is not None:
        m = m & v
    origins = patch_grid(m.shape, patch_px, v)
    if min_skeleton_length_px is None:
        return _area_fragments_by_row(m, origins, patch_px, connectivity, min_area_px)
    counts = [
        count_fragments(
            m[r : r + patch_px, c : c + patch_px],
            connectivity=connectivity,
            min_area_px=min_area_px,
            min_skeleton_length_px=min_skeleton_length_px,
        )
        for r, c in origins
    ]
    return np.array(counts, dtype=np.int64)


def _area_fragments_by_row(
    mask: NDArray[np.bool_],
    origins: list[tuple[int, int]],
    patch_px: int,
    connectivity: int,
    min_area_px: float,
) -> NDArray[np.int64]:
    """:func:`_count_fragments` (area rule only) of every patch at ``origins``, labelling a
    whole row of patches at once: the patches that hold any crack pixel are copied side by side
    with a blank column between them, which no 4- or 8-connected component crosses."""
    structure = _structure(connectivity)
    counts = np.zeros(len(origins), dtype=np.int64)
    rows: dict[int, list[tuple[int, int]]] = {}
    for i, (r, c) in enumerate(origins):
        rows.setdefault(r, []).append((i, c))
    step = patch_px + 1
    col0 = np.arange(0, mask.shape[1], patch_px)
    for r, items in rows.items():
        strip = mask[r : r + patch_px]
        columns = strip.any(axis=0)
        if not columns.any():
            continue
        holds = np.logical_or.reduceat(columns, col0)  # per patch of the row
        busy = sorted({c // patch_px for _, c in items if holds[c // patch_px]})
        if not busy:
            continue
        apart = np.zeros((strip.shape[0], len(busy) * step), dtype=bool)
        for j, k in enumerate(busy):
            block = strip[:, k * patch_px : (k + 1) * patch_px]
            apart[:, j * step : j * step + block.shape[1]] = block
        labels, n = ndimage.label(apart, structure=structure)
        area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        patch = np.array([s[1].start // step for s in ndimage.find_objects(labels)], np.int64)
        per_busy = np.bincount(patch[area >= min_area_px], minlength=len(busy))
        per_patch = dict(zip(busy, per_busy.tolist()))
        for i, c in items:
            counts[i] = per_patch.get(c // patch_px, 0)
    return counts


def continuity_stats(lengths_m: ArrayLike) -> dict[str, float | int]:
    """Scale-free continuity statistics of detected cracks (no GT needed).

    Parameters
    ----------
    lengths_m : array_like of shape (n,), float, metres
        Length of each crack (polyline), e.g. of one building. Must be finite and >= 0.

    Returns
    -------
    dict
        ``n_cracks`` (int), ``total_length_m``, ``fragments_per_m`` (= n / total length,
        1/m), ``mean_length_m`` and ``largest_share`` (= longest / total length, in [0, 1]).
        With no crack, or a total length of 0, the last three are 0.0 (never NaN or inf);
        ``n_cracks`` still tells the number of (zero-length) cracks.
    """
    lengths = np.asarray(lengths_m, dtype=np.float64).ravel()
    if not np.all(np.isfinite(lengths)) or np.any(lengths < 0):
        raise ValueError(
            "lengths_m holds negative or non-finite values; expected crack lengths >= 0 (m)."
        )
    n = int(lengths.size)
    total = float(lengths.sum())
    if total == 0:
        return {
            "n_cracks": n,
            "total_length_m": 0.0,
            "fragments_per_m": 0.0,
            "mean_length_m": 0.0,
            "largest_share": 0.0,
        }
    return {
        "n_cracks": n,
        "total_length_m": total,
        "fragments_per_m": n / total,
        "mean_length_m": total / n,
        "largest_share": float(lengths.max()) / total,
    }
