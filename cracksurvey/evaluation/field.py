"""Metrics that compare with other crack benchmarks, and confidence intervals.

- :func:`cl_iou`: centreline IoU at a tolerance (4 px in recent crack benchmarks): both masks are
  skeletonized, a skeleton pixel is matched when the other skeleton is within the tolerance,
  and ``clIoU = matched / (|S_pred| + |S_gt| - matched)`` with ``matched`` the mean of the
  matched pixel counts of both sides (so it is symmetric and 1 for identical centrelines).
- :func:`dilated_f1`: the F1 score of Dais et al. (2021, masonry crack segmentation): precision
  counts predicted crack pixels inside the ground truth dilated by a 5 x 5 square, recall counts
  ground-truth pixels covered by the prediction (undilated); both on crack regions (masks).
- :func:`bootstrap_interval`: a percentile bootstrap 95 % interval of any statistic of per-image
  values, resampling whole images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from cracksurvey.skeleton import skeletonize_mask

__all__ = ["bootstrap_interval", "cl_iou", "cl_iou_counts", "dilated_f1", "dilated_f1_counts"]


def cl_iou_counts(
    pred_mask: ArrayLike, gt_mask: ArrayLike, *, tolerance_px: float = 4.0
) -> tuple[float, float, float]:
    """(matched, |S_pred|, |S_gt|) of :func:`cl_iou`, to pool over images."""
    sp = skeletonize_mask(np.asarray(pred_mask, bool))
    sg = skeletonize_mask(np.asarray(gt_mask, bool))
    n_p, n_g = float(sp.sum()), float(sg.sum())
    if n_p == 0 or n_g == 0:
        return 0.0, n_p, n_g
    to_gt = ndimage.distance_transform_edt(~sg)
    to_pred = ndimage.distance_transform_edt(~sp)
    matched = 0.5 * (
        float((to_gt[sp] <= tolerance_px).sum()) + float((to_pred[sg] <= tolerance_px).sum())
    )
    return matched, n_p, n_g


def cl_iou(pred_mask: ArrayLike, gt_mask: ArrayLike, *, tolerance_px: float = 4.0) -> float:
    """Centreline IoU at ``tolerance_px`` (module docstring); 1.0 when both are empty.

    >>> a = np.zeros((9, 9), bool); a[4, 1:8] = True
    >>> b = np.zeros((9, 9), bool); b[5, 1:8] = True
    >>> cl_iou(a, b), cl_iou(a, b, tolerance_px=0.5)
    (1.0, 0.0)
    """
    matched, n_p, n_g = cl_iou_counts(pred_mask, gt_mask, tolerance_px=tolerance_px)
    if n_p == 0 and n_g == 0:
        return 1.0
    denominator = n_p + n_g - matched
    return matched / denominator if denominator > 0 else 0.0


def dilated_f1_counts(
    pred_mask: ArrayLike, gt_mask: ArrayLike
) -> tuple[float, float, float, float]:
    """(pred in dilated GT, |pred|, GT covered by pred, |GT|) of :func:`dilated_f1`."""
    p = np.asarray(pred_mask, bool)
    g = np.asarray(gt_mask, bool)
    g_dilated = ndimage.binary_dilation(g, structure=np.ones((5, 5), bool))
    return float((p & g_dilated).sum()), float(p.sum()), float((p & g).sum()), float(g.sum())


def dilated_f1(pred_mask: ArrayLike, gt_mask: ArrayLike) -> float:
    """Dais et al.'s F1 with a dilated ground truth for precision (module docstring).

    >>> g = np.zeros((9, 9), bool); g[4, :] = True
    >>> p = np.zeros((9, 9), bool); p[5, :] = True
    >>> round(dilated_f1(p, g), 3)  # every prediction is near, none covers the GT
    0.0
    """
    tp_p, n_p, tp_g, n_g = dilated_f1_counts(pred_mask, gt_mask)
    return _f1(tp_p, n_p, tp_g, n_g)


def _f1(tp_p: float, n_p: float, tp_g: float, n_g: float) -> float:
    precision = tp_p / n_p if n_p else 0.0
    recall = tp_g / n_g if n_g else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def pooled_dilated_f1(counts: Sequence[tuple[float, float, float, float]]) -> float:
    """Dilated F1 of pooled (micro) counts."""
    tp_p, n_p, tp_g, n_g = np.asarray(counts, float).reshape(-1, 4).sum(0)
    return _f1(tp_p, n_p, tp_g, n_g)


def pooled_cl_iou(counts: Sequence[tuple[float, float, float]]) -> float:
    """clIoU of pooled (micro) counts."""
    matched, n_p, n_g = np.asarray(counts, float).reshape(-1, 3).sum(0)
    denominator = n_p + n_g - matched
    return float(matched / denominator) if denominator > 0 else 1.0


def bootstrap_interval(
    per_image: Sequence[Any],
    statistic: Callable[[list[Any]], float | None],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``statistic`` over images resampled with replacement.

    ``per_image`` holds one entry per image (whatever ``statistic`` pools, e.g. count tuples);
    None when there are no images or the statistic is undefined in most resamples.
    """
    n = len(per_image)
    if n == 0 or n_resamples <= 0:
        return None
    rng = np.random.default_rng(seed)
    values: list[float] = []
    for _ in range(n_resamples):
        pick = rng.integers(0, n, n)
        v = statistic([per_image[i] for i in pick])
        if v is not None and np.isfinite(v):
            values.append(float(v))
    if len(values) < n_resamples // 2:
        return None
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def mean_of(values: list[Any]) -> float | None:
    """Mean of per-image values (NaN-free), None for none."""
    arr: NDArray[np.float64] = (
        np.concatenate([np.atleast_1d(np.asarray(v, float)) for v in values])
        if values
        else np.zeros(0)
    )
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else None
