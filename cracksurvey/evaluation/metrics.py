"""Ground-truth metrics for crack masks: relaxed C/C/Q and F1, clDice, tube Dice, Betti-0, CPP.

All functions are pure: they take per-image 2-D arrays and return numbers, dataclasses or
JSON-ready dicts. They are used by ``cracksurvey evaluate`` and by training validation; the
definitions are in docs/method.md ("Metrics"). CPP itself is production code
(:mod:`cracksurvey.measure.continuity`); here it is compared with the ground truth.

Conventions
-----------
mask
    ``ndarray of shape (H, W)``, bool (or integer, non-zero = crack), True on crack pixels. A
    predicted mask is already thresholded (``distance <= tau``, with the model's own tau). A
    ``(1, H, W)`` array is accepted and squeezed. Float arrays are refused so that an
    unthresholded distance map is never read as a mask.
GT centreline
    The 2-D skeleton (``skimage.morphology.skeletonize`` on the ``(H, W)`` array, Zhang's
    method) of the GT mask. A GT given as a skeleton annotation is skeletonised again, which
    leaves a thin line as it is. Never skeletonise a ``(1, H, W)`` array: recent scikit-image
    thins that with Lee's 3-D method (docs/method.md, D15).
Distances
    In pixels, Euclidean, from ``scipy.ndimage.distance_transform_edt`` of the complement of a
    skeleton. The distance to an empty skeleton is ``+inf`` everywhere (scipy alone would
    measure to a phantom point outside the image corner; docs/method.md, D19).
Undefined values
    A ratio whose denominator is 0 (0/0) is undefined and returned as ``None``, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from cracksurvey.measure.continuity import (
    Connectivity,
    as_mask,
    count_fragments,
    cracks_per_patch,
    patch_grid,
    valid_mask,
)
from cracksurvey.skeleton import skeletonize_mask

__all__ = [
    "RelaxedCounts",
    "RelaxedVariant",
    "aggregate",
    "betti0_error",
    "cldice",
    "cpp_summary",
    "relaxed_counts",
    "tube_dice",
]

RelaxedVariant = Literal["wiedemann", "authors"]
EmptyRule = Literal["exclude", "perfect"]

_RATIOS = ("correctness", "completeness", "quality", "f1")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _same_shape(a: NDArray[Any], b: NDArray[Any], names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} have shapes {a.shape} and {b.shape}; expected equal shapes.")


def _distance_to(skeleton: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Euclidean distance (px) of every pixel to the nearest skeleton pixel; +inf if none."""
    if not skeleton.any():
        return np.full(skeleton.shape, np.inf)
    return np.asarray(ndimage.distance_transform_edt(~skeleton), dtype=np.float64)


def _check_slack(slack_px: float) -> float:
    slack = float(slack_px)
    if not (math.isfinite(slack) and slack >= 0):
        raise ValueError(f"slack_px is {slack_px!r}; expected a finite number >= 0 (pixels).")
    return slack


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else num / den


def _harmonic(a: float | None, b: float | None) -> float | None:
    """Harmonic mean; 0 if a present term is 0 (even if the other is undefined)."""
    if a is None or b is None:
        present = a if b is None else b
        return 0.0 if present == 0 else None
    return 0.0 if a + b == 0 else 2.0 * a * b / (a + b)


def _ratios(
    tp_pred: int, fp: int, tp_gt: int, fn: int, variant: RelaxedVariant
) -> dict[str, float | None]:
    correctness = _ratio(tp_pred, tp_pred + fp)
    if variant == "wiedemann":
        completeness = _ratio(tp_gt, tp_gt + fn)
        quality = _ratio(tp_gt, tp_gt + fn + fp)
    elif variant == "authors":
        completeness = _ratio(tp_pred, tp_pred + fn)
        quality = _ratio(tp_pred, tp_pred + fp + fn)
    else:
        raise ValueError(f"variant is {variant!r}; expected 'wiedemann' or 'authors'.")
    return {
        "correctness": correctness,
        "completeness": completeness,
        "quality": quality,
        "f1": _harmonic(correctness, completeness),
    }


# --------------------------------------------------------------------------------------------
# relaxed correctness / completeness / quality (docs/method.md, "Metrics")
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RelaxedCounts:
    """Relaxed skeleton-pixel counts of one image (docs/method.md, "Relaxed C/C/Q").

    Attributes
    ----------
    tp_pred : int
        Predicted skeleton pixels within ``slack_px`` (<=) of the GT centreline.
    fp : int
        Predicted skeleton pixels farther than ``slack_px`` from the GT centreline.
    tp_gt : int
        GT centreline pixels within ``slack_px`` (<=) of the predicted skeleton.
    fn : int
        GT centreline pixels farther than ``slack_px`` from the predicted skeleton.
    n_pred : int
        Predicted skeleton length in pixels, ``tp_pred + fp``.
    n_gt : int
        GT centreline length in pixels, ``tp_gt + fn``.
    variant : {'wiedemann', 'authors'}
        Which ratio formulas the properties use (see :func:`relaxed_counts`).
    slack_px : float
        Slack used for the counts, pixels.

    The ratio properties return ``None`` when undefined (0/0).
    """

    tp_pred: int
    fp: int
    tp_gt: int
    fn: int
    n_pred: int
    n_gt: int
    variant: RelaxedVariant = "wiedemann"
    slack_px: float = 5.0

    def ratios(self) -> dict[str, float | None]:
        """Correctness, completeness, quality and F1 of this image (``None`` if 0/0)."""
        return _ratios(self.tp_pred, self.fp, self.tp_gt, self.fn, self.variant)

    @property
    def correctness(self) -> float | None:
        """``tp_pred / n_pred``; ``None`` if nothing is predicted."""
        return self.ratios()["correctness"]

    @property
    def completeness(self) -> float | None:
        """Completeness of the variant; ``None`` if the GT is empty."""
        return self.ratios()["completeness"]

    @property
    def quality(self) -> float | None:
        """Quality of the variant; ``None`` if prediction and GT are both empty."""
        return self.ratios()["quality"]

    @property
    def f1(self) -> float | None:
        """Harmonic mean of correctness and completeness (see :func:`aggregate`)."""
        return self.ratios()["f1"]


def relaxed_counts(
    pred_mask: ArrayLike,
    gt_mask: ArrayLike,
    *,
    slack_px: float = 5.0,
    variant: RelaxedVariant = "wiedemann",
) -> RelaxedCounts:
    """Count relaxed matches between predicted and GT skeletons (docs/method.md, D16).

    Both masks are skeletonised in 2-D. A skeleton pixel is matched if its Euclidean distance
    to the other skeleton is ``<= slack_px``.

    Parameters
    ----------
    pred_mask : ndarray of shape (H, W), bool
        Predicted crack mask, already thresholded (``distance <= tau``).
    gt_mask : ndarray of shape (H, W), bool
        GT crack mask (crack body) or its skeleton.
    slack_px : float, default 5.0
        Matching tolerance, pixels; inclusive (``<=``).
    variant : {'wiedemann', 'authors'}, default 'wiedemann'
        Ratio formulas used by the returned counts. The counts themselves do not depend on it.

        ``'wiedemann'`` (our default, D16; each ratio uses counts from one side where possible)::

            correctness  = tp_pred / (tp_pred + fp)
            completeness = tp_gt / (tp_gt + fn)
            quality      = tp_gt / (tp_gt + fn + fp)

        ``quality`` uses the matched GT length, as the brief of this project asks. Heipke et
        al. (1997) put the matched *extracted* length in the numerator instead; the two agree
        when ``tp_pred == tp_gt``.

        ``'authors'`` (the authors' code, without its 1e-12 epsilon)::

            correctness  = tp_pred / (tp_pred + fp)
            completeness = tp_pred / (tp_pred + fn)
            quality      = tp_pred / (tp_pred + fp + fn)

        It mixes predicted-side TP with GT-side FN; the variants agree only when the matched
        skeleton lengths agree (``tp_pred == tp_gt``).

    Returns
    -------
    RelaxedCounts
        ``tp_pred, fp, tp_gt, fn, n_pred, n_gt`` (pixel counts), with ratio properties.

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.zeros((20, 40), bool)
    >>> gt[8, 5:35] = True
    >>> c = relaxed_counts(np.roll(gt, 3, axis=0), gt)
    >>> c.tp_pred, c.fp, c.tp_gt, c.fn, c.correctness, c.completeness
    (30, 0, 30, 0, 1.0, 1.0)
    """
    pred = as_mask(pred_mask, "pred_mask")
    gt = as_mask(gt_mask, "gt_mask")
    _same_shape(pred, gt, "pred_mask and gt_mask")
    slack = _check_slack(slack_px)
    if variant not in ("wiedemann", "authors"):
        raise ValueError(f"variant is {variant!r}; expected 'wiedemann' or 'authors'.")

    sk_pred = skeletonize_mask(pred)
    sk_gt = skeletonize_mask(gt)
    n_pred = int(sk_pred.sum())
    n_gt = int(sk_gt.sum())
    tp_pred = int((_distance_to(sk_gt)[sk_pred] <= slack).sum())
    tp_gt = int((_distance_to(sk_pred)[sk_gt] <= slack).sum())
    return RelaxedCounts(
        tp_pred=tp_pred,
        fp=n_pred - tp_pred,
        tp_gt=tp_gt,
        fn=n_gt - tp_gt,
        n_pred=n_pred,
        n_gt=n_gt,
        variant=variant,
        slack_px=slack,
    )


def aggregate(
    counts_list: Sequence[RelaxedCounts],
    *,
    empty: EmptyRule = "exclude",
) -> dict[str, Any]:
    """Micro and macro correctness, completeness, quality and F1 over many images.

    Micro sums the counts over all images, then takes the ratios (a dataset-level score;
    replaces the authors' per-batch averaging, docs/method.md, D17). Macro is the mean of per-image
    ratios.

    Undefined values (0/0) are never NaN:

    - per image, correctness is undefined when nothing is predicted, completeness when the GT
      is empty, quality when both are empty. F1 is the harmonic mean of correctness and
      completeness and is 0 when one of them is 0 even if the other is undefined (the limit
      of the harmonic mean), so it is undefined only when both masks are empty;
    - macro means skip the images where that ratio is undefined; the number skipped is
      reported per ratio;
    - a ratio with no defined value at all (micro or macro) is ``None``.

    Parameters
    ----------
    counts_list : sequence of RelaxedCounts
        One entry per image, all with the same ``variant`` and ``slack_px``.
    empty : {'exclude', 'perfect'}, default 'exclude'
        Images where prediction and GT are both empty: ``'exclude'`` skips them in every macro
        mean (they are counted in ``n_both_empty`` and in ``macro_n_excluded``);
        ``'perfect'`` scores them 1.0 for all four macro ratios. Micro is the same either way.

    Returns
    -------
    dict
        ``variant`` (str), ``slack_px`` (float), ``n_images`` (int), ``n_both_empty`` (int),
        ``counts`` (dict of summed ``tp_pred, fp, tp_gt, fn, n_pred, n_gt``),
        ``micro`` and ``macro`` (dicts ``correctness, completeness, quality, f1`` ->
        float or None) and ``macro_n_excluded`` (dict of the same keys -> int).
    """
    if empty not in ("exclude", "perfect"):
        raise ValueError(f"empty is {empty!r}; expected 'exclude' or 'perfect'.")
    variants = {c.variant for c in counts_list}
    slacks = {c.slack_px for c in counts_list}
    if len(variants) > 1 or len(slacks) > 1:
        raise ValueError(
            f"counts mix variants {sorted(variants)} / slacks {sorted(slacks)}; expected one "
            "of each. Recompute the counts with the same options."
        )
    variant: RelaxedVariant = variants.pop() if variants else "wiedemann"
    slack = slacks.pop() if slacks else 5.0

    fields = ("tp_pred", "fp", "tp_gt", "fn", "n_pred", "n_gt")
    totals = {f: int(sum(getattr(c, f) for c in counts_list)) for f in fields}
    micro = _ratios(totals["tp_pred"], totals["fp"], totals["tp_gt"], totals["fn"], variant)

    values: dict[str, list[float]] = {k: [] for k in _RATIOS}
    n_both_empty = 0
    for c in counts_list:
        both_empty = c.n_pred == 0 and c.n_gt == 0
        n_both_empty += both_empty
        if both_empty and empty == "perfect":
            for k in _RATIOS:
                values[k].append(1.0)
            continue
        for k, v in c.ratios().items():
            if v is not None:
                values[k].append(v)
    n = len(counts_list)
    return {
        "variant": variant,
        "slack_px": slack,
        "n_images": n,
        "n_both_empty": n_both_empty,
        "counts": totals,
        "micro": micro,
        "macro": {k: (float(np.mean(v)) if v else None) for k, v in values.items()},
        "macro_n_excluded": {k: n - len(v) for k, v in values.items()},
    }


# --------------------------------------------------------------------------------------------
# CPP, cracks per patch, against a ground truth (docs/method.md, "Continuity: CPP")
# --------------------------------------------------------------------------------------------


def _describe(counts: NDArray[np.int64]) -> dict[str, Any]:
    if counts.size == 0:
        return {"mean": None, "median": None, "histogram": []}
    return {
        "mean": float(counts.mean()),
        "median": float(np.median(counts)),
        "histogram": [int(x) for x in np.bincount(counts)],
    }


def _compare(pred: NDArray[np.int64], gt: NDArray[np.int64]) -> dict[str, Any]:
    if pred.size == 0:
        return {
            "n_patches": 0,
            "cpp_pred_mean": None,
            "cpp_gt_mean": None,
            "delta_mean": None,
            "abs_delta_mean": None,
        }
    delta = pred - gt
    return {
        "n_patches": int(pred.size),
        "cpp_pred_mean": float(pred.mean()),
        "cpp_gt_mean": float(gt.mean()),
        "delta_mean": float(delta.mean()),
        "abs_delta_mean": float(np.abs(delta).mean()),
    }


def cpp_summary(
    pred_mask: ArrayLike,
    gt_mask: ArrayLike | None = None,
    *,
    patch_px: int = 256,
    min_area_px: float = 50,
    min_skeleton_length_px: float | None = None,
    connectivity: Connectivity = 8,
    valid: ArrayLike | None = None,
) -> dict[str, Any]:
    """Summarise cracks per patch for a prediction, and against a GT when given.

    Options are those of :func:`cracks_per_patch` and apply to prediction and GT alike.

    Parameters
    ----------
    pred_mask : ndarray of shape (H, W), bool
        Predicted crack mask (after tau).
    gt_mask : ndarray of shape (H, W), bool, optional
        GT crack-body mask.

    Returns
    -------
    dict
        Always: ``patch_px``, ``min_area_px``, ``min_skeleton_length_px``, ``connectivity``,
        ``n_patches`` and ``cpp_pred`` = ``{mean, median, histogram}``, where
        ``histogram[k]`` is the number of patches with ``k`` fragments. With a GT also:
        ``cpp_gt`` (same form), ``delta_mean`` = mean(CPP_pred - CPP_gt),
        ``abs_delta_mean`` = mean(abs(CPP_pred - CPP_gt)), and ``with_gt_crack`` /
        ``without_gt_crack`` = ``{n_patches, cpp_pred_mean, cpp_gt_mean, delta_mean,
        abs_delta_mean}`` over the patches that do / do not hold any GT crack pixel (before
        the size filter). In patches without a GT crack, ``cpp_pred_mean`` is the mean number
        of false-positive fragments. Means over no patch are ``None``.
    """
    options: dict[str, Any] = {
        "patch_px": patch_px,
        "min_area_px": min_area_px,
        "min_skeleton_length_px": min_skeleton_length_px,
        "connectivity": connectivity,
    }
    pred = as_mask(pred_mask, "pred_mask")
    cpp_pred = cracks_per_patch(pred, valid=valid, **options)
    out: dict[str, Any] = {
        **options,
        "n_patches": int(cpp_pred.size),
        "cpp_pred": _describe(cpp_pred),
    }
    if gt_mask is None:
        return out

    gt = as_mask(gt_mask, "gt_mask")
    _same_shape(pred, gt, "pred_mask and gt_mask")
    cpp_gt = cracks_per_patch(gt, valid=valid, **options)
    v = valid_mask(valid, gt.shape)
    gt_in = gt if v is None else gt & v
    has_gt = np.array(
        [
            gt_in[r : r + patch_px, c : c + patch_px].any()
            for r, c in patch_grid(gt.shape, patch_px, v)
        ],
        dtype=bool,
    )
    both = _compare(cpp_pred, cpp_gt)
    out.update(
        cpp_gt=_describe(cpp_gt),
        delta_mean=both["delta_mean"],
        abs_delta_mean=both["abs_delta_mean"],
        with_gt_crack=_compare(cpp_pred[has_gt], cpp_gt[has_gt]),
        without_gt_crack=_compare(cpp_pred[~has_gt], cpp_gt[~has_gt]),
    )
    return out


# --------------------------------------------------------------------------------------------
# topology and overlap (docs/method.md, "clDice, tube Dice, Betti-0")
# --------------------------------------------------------------------------------------------


def cldice(pred_mask: ArrayLike, gt_mask: ArrayLike) -> float:
    """Centreline Dice (clDice, Shit et al. 2021) of two crack masks.

    ``Tprec = |S_pred & V_gt| / |S_pred|``, ``Tsens = |S_gt & V_pred| / |S_gt|`` with ``S`` the
    2-D skeleton and ``V`` the mask; clDice is their harmonic mean (0 if both are 0). It is
    symmetric in its arguments.

    Parameters
    ----------
    pred_mask, gt_mask : ndarray of shape (H, W), bool
        Predicted and GT crack masks.

    Returns
    -------
    float
        In [0, 1]. Both masks empty: 1.0 (perfect agreement); exactly one empty: 0.0.
    """
    pred = as_mask(pred_mask, "pred_mask")
    gt = as_mask(gt_mask, "gt_mask")
    _same_shape(pred, gt, "pred_mask and gt_mask")
    has_pred, has_gt = bool(pred.any()), bool(gt.any())
    if not (has_pred or has_gt):
        return 1.0
    if not (has_pred and has_gt):
        return 0.0
    sk_pred, sk_gt = skeletonize_mask(pred), skeletonize_mask(gt)
    tprec = float((sk_pred & gt).sum()) / float(sk_pred.sum())
    tsens = float((sk_gt & pred).sum()) / float(sk_gt.sum())
    result = _harmonic(tprec, tsens)
    return 0.0 if result is None else result


def betti0_error(
    pred_mask: ArrayLike,
    gt_mask: ArrayLike,
    *,
    connectivity: Connectivity = 8,
    min_area_px: float = 0,
) -> int:
    """Absolute difference of the numbers of connected components (Betti-0 error).

    Parameters
    ----------
    pred_mask, gt_mask : ndarray of shape (H, W), bool
        Predicted and GT crack masks.
    connectivity : {4, 8}, default 8
        Pixel connectivity of a component.
    min_area_px : float, default 0
        Components smaller than this (pixels) are not counted.

    Returns
    -------
    int
        ``abs(#components(pred) - #components(gt))``.
    """
    pred = as_mask(pred_mask, "pred_mask")
    gt = as_mask(gt_mask, "gt_mask")
    _same_shape(pred, gt, "pred_mask and gt_mask")
    n_pred, n_gt = (
        count_fragments(
            m, connectivity=connectivity, min_area_px=min_area_px, min_skeleton_length_px=None
        )
        for m in (pred, gt)
    )
    return abs(n_pred - n_gt)


def tube_dice(
    pred_mask: ArrayLike,
    gt_mask: ArrayLike,
    *,
    slack_px: float = 5.0,
    gt_strict: bool = False,
) -> float:
    """Skeleton-tube Dice of the authors (docs/method.md): Dice of two tubes around skeletons.

    ``A`` = pixels within ``slack_px`` of the predicted skeleton, ``B`` = pixels within
    ``slack_px`` of the GT centreline; Dice = ``2 |A & B| / (|A| + |B|)``.

    The authors' code uses ``<=`` for the predicted tube but a strict ``<`` for the GT tube,
    unlike the ``<=`` of the relaxed counts (docs/method.md, D18). By default both tubes use ``<=``;
    ``gt_strict=True`` reproduces the authors' ``<``. Their ``1e-5`` smoothing is dropped (it
    made two empty masks score 2.0).

    Parameters
    ----------
    pred_mask, gt_mask : ndarray of shape (H, W), bool
        Predicted crack mask (after tau) and GT crack mask or skeleton.
    slack_px : float, default 5.0
        Tube radius, pixels.
    gt_strict : bool, default False
        Use ``distance < slack_px`` for the GT tube (authors' code).

    Returns
    -------
    float
        In [0, 1]; 1.0 if both tubes are empty.
    """
    pred = as_mask(pred_mask, "pred_mask")
    gt = as_mask(gt_mask, "gt_mask")
    _same_shape(pred, gt, "pred_mask and gt_mask")
    slack = _check_slack(slack_px)
    tube_pred = _distance_to(skeletonize_mask(pred)) <= slack
    d_gt = _distance_to(skeletonize_mask(gt))
    tube_gt = d_gt < slack if gt_strict else d_gt <= slack
    den = int(tube_pred.sum()) + int(tube_gt.sum())
    if den == 0:
        return 1.0
    return 2.0 * float((tube_pred & tube_gt).sum()) / float(den)
