"""Evaluation metrics for crack masks: relaxed C/C/Q and F1, clDice, tube Dice, Betti-0, CPP.

All functions are pure: they take per-image 2-D arrays and return numbers, dataclasses or
JSON-ready dicts. They are used by ``cracksurvey evaluate``, by training validation and by the
per-building summaries (METHOD.md section 7).

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
    thins that with Lee's 3-D method (METHOD B9).
Distances
    In pixels, Euclidean, from ``scipy.ndimage.distance_transform_edt`` of the complement of a
    skeleton. The distance to an empty skeleton is ``+inf`` everywhere (scipy alone would
    measure to a phantom point outside the image corner, METHOD B6).
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

from .skeleton import skeletonize_mask

__all__ = [
    "RelaxedCounts",
    "RelaxedVariant",
    "aggregate",
    "betti0_error",
    "cldice",
    "continuity_stats",
    "cpp_summary",
    "cracks_per_patch",
    "patch_origins",
    "relaxed_counts",
    "tube_dice",
]

RelaxedVariant = Literal["wiedemann", "authors"]
EmptyRule = Literal["exclude", "perfect"]
Connectivity = Literal[4, 8]

_RATIOS = ("correctness", "completeness", "quality", "f1")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _as_mask(mask: ArrayLike, name: str) -> NDArray[np.bool_]:
    """Return ``mask`` as a 2-D bool array, squeezing a leading band axis of size 1."""
    arr = np.asarray(mask)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(
            f"{name} has shape {arr.shape}; expected a 2-D (rows, cols) mask or (1, rows, cols)."
        )
    if arr.dtype == np.bool_:
        return arr
    if np.issubdtype(arr.dtype, np.integer):
        return arr != 0
    raise TypeError(
        f"{name} has dtype {arr.dtype}; expected a bool mask. Threshold a distance map first "
        "(mask = distance <= tau)."
    )


def _same_shape(a: NDArray[Any], b: NDArray[Any], names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} have shapes {a.shape} and {b.shape}; expected equal shapes.")


_skeleton = skeletonize_mask  # one 2-D (Zhang) skeleton for the whole package


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
    sk = _skeleton(labels > 0)
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


def _count_fragments(
    mask: NDArray[np.bool_],
    *,
    connectivity: int,
    min_area_px: float,
    min_skeleton_length_px: float | None,
) -> int:
    if not mask.any():  # most patches of a survey image: no labelling needed
        return 0
    labels, n = _label(mask, connectivity)
    if n == 0:
        return 0
    keep = np.bincount(labels.ravel(), minlength=n + 1)[1:] >= min_area_px
    if min_skeleton_length_px is not None:
        keep &= _skeleton_lengths(labels, n)[1:] >= min_skeleton_length_px
    return int(keep.sum())


# --------------------------------------------------------------------------------------------
# relaxed correctness / completeness / quality (METHOD 7.1, 7.2)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RelaxedCounts:
    """Relaxed skeleton-pixel counts of one image (METHOD 7.1).

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
    """Count relaxed matches between predicted and GT skeletons (METHOD 7.1, bug B9 fixed).

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

        ``'wiedemann'`` (B9 fixed; each ratio uses counts from one side where possible)::

            correctness  = tp_pred / (tp_pred + fp)
            completeness = tp_gt / (tp_gt + fn)
            quality      = tp_gt / (tp_gt + fn + fp)

        ``quality`` uses the matched GT length, as the brief of this project asks. Heipke et
        al. (1997) put the matched *extracted* length in the numerator instead; the two agree
        when ``tp_pred == tp_gt``.

        ``'authors'`` (METHOD 7.1 as coded, without the 1e-12 epsilon)::

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
    pred = _as_mask(pred_mask, "pred_mask")
    gt = _as_mask(gt_mask, "gt_mask")
    _same_shape(pred, gt, "pred_mask and gt_mask")
    slack = _check_slack(slack_px)
    if variant not in ("wiedemann", "authors"):
        raise ValueError(f"variant is {variant!r}; expected 'wiedemann' or 'authors'.")

    sk_pred = _skeleton(pred)
    sk_gt = _skeleton(gt)
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
    replaces the authors' per-batch averaging, METHOD B9). Macro is the mean of per-image
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
# CPP, cracks per patch (METHOD 7.4)
# --------------------------------------------------------------------------------------------


def _grid(
    shape: tuple[int, int], patch_px: int, valid: NDArray[np.bool_] | None
) -> list[tuple[int, int]]:
    if patch_px < 1:
        raise ValueError(f"patch_px is {patch_px!r}; expected a positive integer.")
    rows, cols = shape
    full = patch_px * patch_px
    origins = []
    for r in range(0, rows, patch_px):
        for c in range(0, cols, patch_px):
            if valid is None:
                inside = (min(rows, r + patch_px) - r) * (min(cols, c + patch_px) - c)
            else:
                inside = int(valid[r : r + patch_px, c : c + patch_px].sum())
            if 2 * inside >= full:
                origins.append((r, c))
    return origins


def _valid_mask(valid: ArrayLike | None, shape: tuple[int, ...]) -> NDArray[np.bool_] | None:
    if valid is None:
        return None
    v = _as_mask(valid, "valid")
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
    v = _valid_mask(valid, (rows, cols))
    return np.array(_grid((rows, cols), patch_px, v), dtype=np.int64).reshape(-1, 2)


def cracks_per_patch(
    mask: ArrayLike,
    *,
    patch_px: int = 256,
    min_area_px: float = 50,
    min_skeleton_length_px: float | None = None,
    connectivity: Connectivity = 8,
    valid: ArrayLike | None = None,
) -> NDArray[np.int64]:
    """Number of crack fragments in each counted patch (CPP, METHOD 7.4).

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
    m = _as_mask(mask, "mask")
    v = _valid_mask(valid, m.shape)
    if v is not None:
        m = m & v
    origins = _grid(m.shape, patch_px, v)
    if min_skeleton_length_px is None:
        return _area_fragments_by_row(m, origins, patch_px, connectivity, min_area_px)
    counts = [
        _count_fragments(
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
    whole row of patches at once: the patches are copied side by side with a blank column
    between them, which no 4- or 8-connected component crosses."""
    structure = _structure(connectivity)
    counts = np.zeros(len(origins), dtype=np.int64)
    rows: dict[int, list[tuple[int, int]]] = {}
    for i, (r, c) in enumerate(origins):
        rows.setdefault(r, []).append((i, c))
    step = patch_px + 1
    for r, items in rows.items():
        strip = mask[r : r + patch_px]
        if not strip.any():
            continue
        n_cols = -(-strip.shape[1] // patch_px)
        apart = np.zeros((strip.shape[0], n_cols * step), dtype=bool)
        for k in range(n_cols):
            block = strip[:, k * patch_px : (k + 1) * patch_px]
            apart[:, k * step : k * step + block.shape[1]] = block
        labels, n = ndimage.label(apart, structure=structure)
        if n == 0:
            continue
        area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        patch = np.array([s[1].start // step for s in ndimage.find_objects(labels)])
        per_patch = np.bincount(patch[area >= min_area_px], minlength=n_cols)
        for i, c in items:
            counts[i] = per_patch[c // patch_px]
    return counts


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
    pred = _as_mask(pred_mask, "pred_mask")
    cpp_pred = cracks_per_patch(pred, valid=valid, **options)
    out: dict[str, Any] = {
        **options,
        "n_patches": int(cpp_pred.size),
        "cpp_pred": _describe(cpp_pred),
    }
    if gt_mask is None:
        return out

    gt = _as_mask(gt_mask, "gt_mask")
    _same_shape(pred, gt, "pred_mask and gt_mask")
    cpp_gt = cracks_per_patch(gt, valid=valid, **options)
    v = _valid_mask(valid, gt.shape)
    gt_in = gt if v is None else gt & v
    has_gt = np.array(
        [gt_in[r : r + patch_px, c : c + patch_px].any() for r, c in _grid(gt.shape, patch_px, v)],
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
# topology and overlap (METHOD 7.3, 7.5)
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
    pred = _as_mask(pred_mask, "pred_mask")
    gt = _as_mask(gt_mask, "gt_mask")
    _same_shape(pred, gt, "pred_mask and gt_mask")
    has_pred, has_gt = bool(pred.any()), bool(gt.any())
    if not (has_pred or has_gt):
        return 1.0
    if not (has_pred and has_gt):
        return 0.0
    sk_pred, sk_gt = _skeleton(pred), _skeleton(gt)
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
    pred = _as_mask(pred_mask, "pred_mask")
    gt = _as_mask(gt_mask, "gt_mask")
    _same_shape(pred, gt, "pred_mask and gt_mask")
    n_pred, n_gt = (
        _count_fragments(
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
    """Skeleton-tube Dice of the authors (METHOD 7.3): Dice of two tubes around skeletons.

    ``A`` = pixels within ``slack_px`` of the predicted skeleton, ``B`` = pixels within
    ``slack_px`` of the GT centreline; Dice = ``2 |A & B| / (|A| + |B|)``.

    The authors' code uses ``<=`` for the predicted tube but a strict ``<`` for the GT tube,
    unlike the ``<=`` of the relaxed counts (B9). By default both tubes use ``<=``;
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
    pred = _as_mask(pred_mask, "pred_mask")
    gt = _as_mask(gt_mask, "gt_mask")
    _same_shape(pred, gt, "pred_mask and gt_mask")
    slack = _check_slack(slack_px)
    tube_pred = _distance_to(_skeleton(pred)) <= slack
    d_gt = _distance_to(_skeleton(gt))
    tube_gt = d_gt < slack if gt_strict else d_gt <= slack
    den = int(tube_pred.sum()) + int(tube_gt.sum())
    if den == 0:
        return 1.0
    return 2.0 * float((tube_pred & tube_gt).sum()) / float(den)


# --------------------------------------------------------------------------------------------
# continuity without GT (METHOD 7.4, "for façades without GT")
# --------------------------------------------------------------------------------------------


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
