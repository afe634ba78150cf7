"""Score a model on labelled data (``cracksurvey evaluate``).

For every image of a split: predict the distance map (whole image, reflect-padded; the same
network call as the engine's), threshold at the card's calibrated τ, and compare with the GT mask:

- relaxed correctness / completeness / quality / F1 at a slack (docs/method.md, "Metrics";
  Wiedemann completeness by default, the authors' variant on request), micro and macro;
- CPP of prediction and GT per 256-px patch, ΔCPP and mean |ΔCPP|;
- clDice and the Betti-0 (component count) error;
- width: at predicted skeleton pixels matched (within the slack) to the GT centreline, the width
  measured on the predicted body map vs the width measured the same way on the GT mask (px).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from cracksurvey.config import Precision
from cracksurvey.evaluation.datasets import list_pairs, read_mask, read_rgb
from cracksurvey.evaluation.metrics import aggregate, betti0_error, cldice, relaxed_counts
from cracksurvey.measure.continuity import cracks_per_patch
from cracksurvey.measure.width import measure_width_px
from cracksurvey.model import load_model
from cracksurvey.predict import effective_precision, keep_freed_memory
from cracksurvey.skeleton import skeletonize_mask
from cracksurvey.tiling import predict_untiled

log = logging.getLogger(__name__)


def width_errors(
    pred_body: np.ndarray | None,
    pred_skeleton: np.ndarray,
    gt_mask: np.ndarray,
    *,
    slack_px: float,
) -> np.ndarray:
    """Predicted minus GT width (px) at predicted skeleton pixels within ``slack_px`` of the GT.

    Both widths are measured with :func:`cracksurvey.measure.width.measure_width_px`: the predicted
    one on the body probability, the GT one on the GT mask at the nearest GT skeleton pixel.
    """
    if pred_body is None or not pred_skeleton.any() or not gt_mask.any():
        return np.zeros(0, np.float32)
    gt_skeleton = skeletonize_mask(gt_mask)
    if not gt_skeleton.any():
        return np.zeros(0, np.float32)
    dist, (near_r, near_c) = ndimage.distance_transform_edt(~gt_skeleton, return_indices=True)
    rows, cols = np.nonzero(pred_skeleton)
    keep = dist[rows, cols] <= slack_px
    rows, cols = rows[keep], cols[keep]
    if rows.size == 0:
        return np.zeros(0, np.float32)
    w_pred = measure_width_px(pred_body, pred_skeleton, at=(rows, cols))
    w_gt = measure_width_px(gt_mask, gt_skeleton, at=(near_r[rows, cols], near_c[rows, cols]))
    diff = w_pred - w_gt
    return diff[np.isfinite(diff)].astype(np.float32)


def evaluate_model(
    weights: str | Path | None,
    data_dirs: Sequence[Path],
    *,
    split: str = "test",
    slack_px: float = 5.0,
    threshold_px: float | None = None,
    variant: str = "wiedemann",
    cpp_patch_px: int = 256,
    cpp_min_area_px: int = 50,
    precision: Precision = "auto",
    halo_px: int = 64,
    progress: Callable[[int, str], Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a model on one split of one or more dataset folders.

    Returns a dict with, per dataset and for all together: micro/macro relaxed metrics, CPP
    summary (pred, GT, ΔCPP), clDice (mean over images), Betti-0 error (mean), width error
    (MAE and bias, px), image count; plus the model id, checksum and threshold used.
    """
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    keep_freed_memory()
    model, card = load_model(weights, device=device)
    tau = card.threshold_px if threshold_px is None else float(threshold_px)
    prec = effective_precision(precision, device)
    results: dict[str, Any] = {
        "model_id": card.model_id,
        "sha256": card.sha256,
        "threshold_px": tau,
        "slack_px": slack_px,
        "variant": variant,
        "precision": prec,
        "split": split,
        "cpp": {"patch_px": cpp_patch_px, "min_area_px": cpp_min_area_px},
        "datasets": {},
    }
    everything: dict[str, list[Any]] = {
        "counts": [],
        "cpp_pred": [],
        "cpp_gt": [],
        "cldice": [],
        "betti0": [],
        "width": [],
    }
    for data_dir in data_dirs:
        pairs = list_pairs(data_dir, split)
        bar = progress(len(pairs), Path(data_dir).name) if progress else None
        acc: dict[str, list[Any]] = {k: [] for k in everything}
        for pair in pairs:
            image = read_rgb(pair.image)
            gt = read_mask(pair.mask)
            distance, body = predict_untiled(
                image, model, card, halo_px=halo_px, precision=prec, device=device
            )
            pred = distance <= tau
            acc["counts"].append(relaxed_counts(pred, gt, slack_px=slack_px, variant=variant))  # type: ignore[arg-type]
            # CPP pooled over every counted patch of every image (images smaller than half a
            # patch have none)
            acc["cpp_pred"].append(
                cracks_per_patch(pred, patch_px=cpp_patch_px, min_area_px=cpp_min_area_px)
            )
            acc["cpp_gt"].append(
                cracks_per_patch(gt, patch_px=cpp_patch_px, min_area_px=cpp_min_area_px)
            )
            acc["cldice"].append(cldice(pred, gt))
            acc["betti0"].append(betti0_error(pred, gt, min_area_px=cpp_min_area_px))
            acc["width"].append(width_errors(body, skeletonize_mask(pred), gt, slack_px=slack_px))
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        results["datasets"][Path(data_dir).name] = _summarise(acc)
        for k in everything:
            everything[k].extend(acc[k])
    if len(data_dirs) > 1:
        results["all"] = _summarise(everything)
    return results


def _summarise(acc: dict[str, list[Any]]) -> dict[str, Any]:
    agg = aggregate(acc["counts"])
    pred = np.concatenate(acc["cpp_pred"]).astype(float) if acc["cpp_pred"] else np.zeros(0)
    gt = np.concatenate(acc["cpp_gt"]).astype(float) if acc["cpp_gt"] else np.zeros(0)
    widths = np.concatenate(acc["width"]) if acc["width"] else np.zeros(0)
    return {
        "n_images": len(acc["counts"]),
        "micro": agg["micro"],
        "macro": agg["macro"],
        "counts": agg["counts"],
        "cpp_n_patches": int(pred.size),
        "cpp_pred_mean": float(pred.mean()) if pred.size else None,
        "cpp_gt_mean": float(gt.mean()) if gt.size else None,
        "delta_cpp_mean": float((pred - gt).mean()) if pred.size else None,
        "abs_delta_cpp_mean": float(np.abs(pred - gt).mean()) if pred.size else None,
        "cldice_mean": float(np.mean(acc["cldice"])) if acc["cldice"] else 0.0,
        "betti0_error_mean": float(np.mean(acc["betti0"])) if acc["betti0"] else 0.0,
        "width_mae_px": float(np.abs(widths).mean()) if widths.size else None,
        "width_bias_px": float(widths.mean()) if widths.size else None,
        "width_n_px": int(widths.size),
    }


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table of the headline numbers."""
    cols = [
        "dataset",
        "n",
        "correct.",
        "complete.",
        "quality",
        "F1",
        "CPP pred",
        "CPP GT",
        "|ΔCPP|",
        "clDice",
        "β0 err",
        "width MAE px",
    ]
    rows = []
    entries = list(results["datasets"].items()) + (
        [("all", results["all"])] if "all" in results else []
    )
    for name, r in entries:
        m = r["micro"]
        rows.append(
            [
                name,
                r["n_images"],
                m["correctness"],
                m["completeness"],
                m["quality"],
                m["f1"],
                r["cpp_pred_mean"],
                r["cpp_gt_mean"],
                r["abs_delta_cpp_mean"],
                r["cldice_mean"],
                r["betti0_error_mean"],
                r["width_mae_px"],
            ]
        )
    table = [cols] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(str(r[i])) for r in table) for i in range(len(cols))]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    head = (
        f"model {results['model_id']} (sha256 {results['sha256'][:12]}), threshold {results['threshold_px']} px, "
        f"slack {results['slack_px']} px, {results['variant']} completeness, micro over images; "
        f"CPP: patch {results['cpp']['patch_px']} px, min area {results['cpp']['min_area_px']} px"
    )
    return "\n".join([head, lines[0], "-" * len(lines[0]), *lines[1:]])
