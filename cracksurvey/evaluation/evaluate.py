"""Score a model on labelled data (``cracksurvey evaluate``).

For every image of a split: predict the distance map (the whole image in one network call, as
one tile of the engine), threshold at the card's calibrated τ, turn it into the centreline of the
crack layer ``process`` writes (gap bridging, spur pruning, minimum length), and compare with the
GT mask (docs/method.md, "Evaluation"):

- relaxed correctness / completeness / quality / F1 at a slack (docs/method.md, "Metrics";
  Wiedemann completeness by default, the authors' variant on request), micro and macro;
- CPP of prediction and GT per 256-px patch, ΔCPP and mean |ΔCPP|;
- clDice and the Betti-0 (component count) error;
- width: at predicted skeleton pixels matched (within the slack) to the GT centreline, the width
  ``process`` reports (from the image) vs the width measured on the GT mask (px), the same for
  the body-map width of earlier versions, and how much wider the masks are drawn than the dark
  crack (mask width over image width at the GT centreline).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from cracksurvey.config import Border, Precision, VectorizeConfig
from cracksurvey.evaluation.datasets import list_pairs, read_mask, read_rgb
from cracksurvey.evaluation.field import (
    bootstrap_interval,
    cl_iou_counts,
    dilated_f1_counts,
    mean_of,
    pooled_cl_iou,
    pooled_dilated_f1,
)
from cracksurvey.evaluation.metrics import aggregate, betti0_error, cldice, relaxed_counts
from cracksurvey.measure.continuity import cracks_per_patch
from cracksurvey.measure.width import measure_width_px, skeleton_widths
from cracksurvey.model import load_model
from cracksurvey.predict import effective_precision, keep_freed_memory
from cracksurvey.skeleton import skeletonize_mask
from cracksurvey.tiling import predict_untiled

log = logging.getLogger(__name__)


def width_errors(
    image: np.ndarray | None,
    pred_body: np.ndarray | None,
    pred_skeleton: np.ndarray,
    gt_mask: np.ndarray,
    *,
    slack_px: float,
) -> dict[str, np.ndarray]:
    """Width errors at predicted skeleton pixels within ``slack_px`` of the GT centreline (px).

    The GT width is measured on the GT mask at the nearest GT skeleton pixel
    (:func:`cracksurvey.measure.width.measure_width_px`). Returns:

    - ``error``: the width ``process`` reports (:func:`cracksurvey.measure.width.
      skeleton_widths`: from the image, ``image`` (3, H, W); pixels below the measurable limit
      have none) minus the GT width;
    - ``error_body``: the width measured on the predicted body map minus the GT width (the
      width of earlier versions);
    - ``overdraw``: at every GT skeleton pixel, the GT mask's width over the width measured
      from the image: how much wider the masks are drawn than the dark crack they annotate.
    """
    empty = np.zeros(0, np.float32)
    out = {"error": empty, "error_body": empty, "overdraw": empty}
    if not pred_skeleton.any() or not gt_mask.any():
        return out
    gt_skeleton = skeletonize_mask(gt_mask)
    if not gt_skeleton.any():
        return out
    grey = None if image is None else image.mean(axis=0, dtype=np.float32)
    dist, (near_r, near_c) = ndimage.distance_transform_edt(~gt_skeleton, return_indices=True)
    rows, cols = np.nonzero(pred_skeleton)
    keep = dist[rows, cols] <= slack_px
    rows, cols = rows[keep], cols[keep]
    if grey is not None:
        g_rows, g_cols = np.nonzero(gt_skeleton)
        w_mask = measure_width_px(gt_mask, gt_skeleton, at=(g_rows, g_cols))
        w_image = skeleton_widths(gt_skeleton, (g_rows, g_cols), grey=grey, body=None).width_px
        ratio = w_mask / w_image
        out["overdraw"] = ratio[np.isfinite(ratio)].astype(np.float32)
    if rows.size == 0:
        return out
    w_gt = measure_width_px(gt_mask, gt_skeleton, at=(near_r[rows, cols], near_c[rows, cols]))
    if grey is not None:
        w_pred = skeleton_widths(pred_skeleton, (rows, cols), grey=grey, body=pred_body).width_px
        diff = w_pred - w_gt
        out["error"] = diff[np.isfinite(diff)].astype(np.float32)
    if pred_body is not None:
        diff = measure_width_px(pred_body, pred_skeleton, at=(rows, cols)) - w_gt
        out["error_body"] = diff[np.isfinite(diff)].astype(np.float32)
    return out


def crack_layer_skeleton(
    distance: np.ndarray,
    *,
    threshold_px: float,
    vectorize: VectorizeConfig,
    image: np.ndarray | None = None,
    verifier: tuple[Any, Any, float] | None = None,
) -> tuple[np.ndarray, int]:
    """The centreline of an image's crack layer, as ``process`` would write it.

    Threshold, skeleton, gap bridging (:mod:`cracksurvey.gaps`), then the vectorize stage's spur
    pruning and minimum crack length (:func:`cracksurvey.vectorize.trace_cracks`), and with
    ``verifier = (net, card, min_score)`` and the uint8 (3, H, W) ``image`` the crack verifier
    (:mod:`cracksurvey.verify`: points spread over each crack's pixels). Returns the kept
    skeleton (bool, image-sized) and the number of bridges.
    """
    from cracksurvey.gaps import bridge_gaps
    from cracksurvey.vectorize import trace_cracks

    skeleton = skeletonize_mask(distance <= threshold_px)
    bridges, n_bridges = bridge_gaps(
        distance,
        skeleton,
        max_gap_px=vectorize.bridge_gap_px,
        max_valley_px=vectorize.valley_px(threshold_px),
    )
    skeleton |= bridges
    rows, cols = np.nonzero(skeleton)
    kept = np.zeros_like(skeleton)
    if rows.size:
        network = trace_cracks(
            rows.astype(np.int64),
            cols.astype(np.int64),
            np.full(rows.size, np.nan),
            distance[rows, cols].astype(np.float64),
            min_spur_px=vectorize.min_spur_px,
            min_crack_length_px=vectorize.min_crack_length_px,
            smoothing_px=0.0,
        )
        on = network.pixel_crack >= 0
        if verifier is not None and image is not None and on.any():
            on &= _verified(network, image, verifier)
        kept[network.rows[on], network.cols[on]] = True
    return kept, n_bridges


def _verified(network: Any, image: np.ndarray, verifier: tuple[Any, Any, float]) -> np.ndarray:
    """Per network pixel: its crack passes the verifier (pixels of no crack: False)."""
    from cracksurvey.verify import read_patches, score_cracks

    net, card, min_score = verifier
    crack = network.pixel_crack
    ids = np.unique(crack[crack >= 0])
    rows, cols, which = [], [], []
    for k, c in enumerate(ids):
        members = np.nonzero(crack == c)[0]
        n = max(1, min(card.points_per_crack, members.size // 8 + 1))
        pick = members[((np.arange(n) + 0.5) / n * members.size).astype(np.int64)]
        rows.append(network.rows[pick])
        cols.append(network.cols[pick])
        which.append(np.full(n, k))
    patches = read_patches(image, np.concatenate(rows), np.concatenate(cols), card.patch_px)
    mean = score_cracks(net, card, patches, np.concatenate(which), ids.size)
    passed = np.zeros(int(crack.max()) + 1, bool)
    passed[ids] = mean >= min_score
    return np.where(crack >= 0, passed[np.maximum(crack, 0)], False)


def bridged_gt_centreline(gt_centreline: np.ndarray, *, max_gap_px: float) -> np.ndarray:
    """The GT centreline with its gaps bridged by the rule the crack layer gets.

    Annotators often draw one visible crack as several pieces (the pen lifted at a brick edge or
    a branch). The crack layer bridges its own gaps of up to ``max_gap_px`` from a centreline tip
    to another piece (:func:`cracksurvey.gaps.bridge_gaps`); here the same search runs on the GT
    centreline, with no valley limit (a mask has no distance map), so that a CPP computed on both
    counts pieces by the same rule. Reported beside the paper's CPP, not instead of it.
    """
    from cracksurvey.gaps import bridge_gaps

    flat = np.zeros(gt_centreline.shape, np.float64)
    bridges, _ = bridge_gaps(flat, gt_centreline, max_gap_px=max_gap_px, max_valley_px=np.inf)
    return gt_centreline | bridges


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
    cpp_min_length_px: float = 10.0,
    cliou_tolerance_px: float = 4.0,
    precision: Precision = "auto",
    halo_px: int = 0,
    postprocess: bool = True,
    vectorize: VectorizeConfig | None = None,
    tta: bool = False,
    verify: bool = True,
    verifier_weights: str | Path | None = None,
    bootstrap: int = 1000,
    progress: Callable[[int, str], Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a model on one split of one or more dataset folders.

    Each image is predicted whole (``halo_px`` of reflect padding around it: 0 by default, see
    docs/method.md, "Evaluation"), thresholded at the card's τ and, with ``postprocess``, turned
    into the centreline of the crack layer ``process`` would write (gap bridging, spur pruning,
    minimum crack length and, with ``verify``, the shipped crack verifier, or the one at
    ``verifier_weights``, at its calibrated threshold when the model is the one it was trained
    behind: :func:`crack_layer_skeleton`, settings ``vectorize``, default the process
    defaults).

    Returns a dict with, per dataset and for all together: micro/macro relaxed metrics; CPP of
    prediction and GT per patch on centrelines (fragments of at least ``cpp_min_length_px``),
    ΔCPP and mean |ΔCPP|, the same against the GT centreline with its gaps bridged by the crack
    layer's rule (``*_gt_bridged``, :func:`bridged_gt_centreline`), and the mask-area CPP of
    earlier versions (``cpp_mask_*``); clDice,
    Betti-0 error, clIoU at ``cliou_tolerance_px``, Dais et al.'s dilated F1 (on the crack-body
    head's mask), width error (MAE and bias, px); bootstrap 95 % intervals over images
    (``ci95``) for the headline metrics; plus the model id, checksum and settings used.
    """
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    keep_freed_memory()
    model, card = load_model(weights, device=device)
    tau = card.threshold_px if threshold_px is None else float(threshold_px)
    prec = effective_precision(precision, device)
    vcfg = vectorize or VectorizeConfig()
    verifier = None
    if verify and postprocess:
        from cracksurvey.verify import load_verifier

        v_net, v_card = load_verifier(verifier_weights)
        if v_card.crack_model_sha256 == card.sha256:  # as process's verify.mode auto
            verifier = (v_net, v_card, v_card.min_score)
    results: dict[str, Any] = {
        "model_id": card.model_id,
        "sha256": card.sha256,
        "threshold_px": tau,
        "slack_px": slack_px,
        "variant": variant,
        "precision": prec,
        "split": split,
        "halo_px": halo_px,
        "tta": tta,
        "postprocess": dataclasses.asdict(vcfg) if postprocess else None,
        "verifier": (
            {
                "model_id": verifier[1].model_id,
                "sha256": verifier[1].sha256,
                "min_score": verifier[2],
            }
            if verifier is not None
            else None
        ),
        "cpp": {
            "patch_px": cpp_patch_px,
            "min_length_px": cpp_min_length_px,
            "mask_min_area_px": cpp_min_area_px,
        },
        "cliou_tolerance_px": cliou_tolerance_px,
        "bootstrap": bootstrap,
        "datasets": {},
    }
    keys = (
        "counts",
        "cpp_pred",
        "cpp_gt",
        "cpp_gt_bridged",
        "cpp_mask_pred",
        "cpp_mask_gt",
        "cldice",
        "betti0",
        "width",
        "width_body",
        "overdraw",
        "cliou",
        "dil_f1",
        "bridges",
    )
    everything: dict[str, list[Any]] = {k: [] for k in keys}

    def centreline_cpp(m: np.ndarray) -> np.ndarray:
        return cracks_per_patch(
            m, patch_px=cpp_patch_px, min_area_px=0, min_skeleton_length_px=cpp_min_length_px
        )

    for data_dir in data_dirs:
        pairs = list_pairs(data_dir, split)
        bar = progress(len(pairs), Path(data_dir).name) if progress else None
        acc: dict[str, list[Any]] = {k: [] for k in keys}
        for pair in pairs:
            image = read_rgb(pair.image)
            gt = read_mask(pair.mask)
            distance, body = predict_image(
                image, model, card, halo_px=halo_px, precision=prec, device=device, tta=tta
            )
            mask = distance <= tau
            if postprocess:
                centreline, n_bridges = crack_layer_skeleton(
                    distance, threshold_px=tau, vectorize=vcfg, image=image, verifier=verifier
                )
            else:
                centreline, n_bridges = skeletonize_mask(mask), 0
            gt_centreline = skeletonize_mask(gt)
            acc["counts"].append(
                relaxed_counts(centreline, gt, slack_px=slack_px, variant=variant)  # type: ignore[arg-type]
            )

            acc["cpp_pred"].append(centreline_cpp(centreline))
            acc["cpp_gt"].append(centreline_cpp(gt_centreline))
            acc["cpp_gt_bridged"].append(
                centreline_cpp(bridged_gt_centreline(gt_centreline, max_gap_px=vcfg.bridge_gap_px))
            )
            acc["cpp_mask_pred"].append(
                cracks_per_patch(mask, patch_px=cpp_patch_px, min_area_px=cpp_min_area_px)
            )
            acc["cpp_mask_gt"].append(
                cracks_per_patch(gt, patch_px=cpp_patch_px, min_area_px=cpp_min_area_px)
            )
            acc["cldice"].append(cldice(mask | centreline, gt))
            acc["betti0"].append(betti0_error(mask, gt, min_area_px=cpp_min_area_px))
            widths = width_errors(image, body, centreline, gt, slack_px=slack_px)
            acc["width"].append(widths["error"])
            acc["width_body"].append(widths["error_body"])
            acc["overdraw"].append(widths["overdraw"])
            acc["cliou"].append(cl_iou_counts(centreline, gt, tolerance_px=cliou_tolerance_px))
            if body is not None:
                acc["dil_f1"].append(dilated_f1_counts(body >= 0.5, gt))
            acc["bridges"].append(n_bridges)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        results["datasets"][Path(data_dir).name] = _summarise(acc, bootstrap)
        for k in everything:
            everything[k].extend(acc[k])
    if len(data_dirs) > 1:
        results["all"] = _summarise(everything, bootstrap)
    return results


def predict_image(
    image: np.ndarray,
    model: Any,
    card: Any,
    *,
    halo_px: int,
    precision: Precision,
    device: str,
    tta: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Distance (and body) of a whole image; with ``tta`` averaged over the 8 flips and quarter
    turns of the image (each prediction turned back before averaging)."""
    border: Border = "reflect" if halo_px else "image"  # halo_px: reflect padding around it
    if not tta:
        return predict_untiled(
            image, model, card, halo_px=halo_px, precision=precision, device=device, border=border
        )
    distances, bodies = [], []
    for k in range(4):
        for flip in (False, True):
            view = np.rot90(image, k, axes=(1, 2))
            view = view[:, :, ::-1] if flip else view
            d, b = predict_untiled(
                np.ascontiguousarray(view),
                model,
                card,
                halo_px=halo_px,
                precision=precision,
                device=device,
                border=border,
            )
            if flip:
                d = d[:, ::-1]
                b = None if b is None else b[:, ::-1]
            distances.append(np.rot90(d, -k))
            if b is not None:
                bodies.append(np.rot90(b, -k))
    body = np.mean(bodies, axis=0).astype(np.float32) if bodies else None
    return np.mean(distances, axis=0).astype(np.float32), body


def _abs_delta(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float | None:
    if not pairs:
        return None
    pred = np.concatenate([p for p, _ in pairs]).astype(float)
    gt = np.concatenate([g for _, g in pairs]).astype(float)
    return float(np.abs(pred - gt).mean()) if pred.size else None


def _summarise(acc: dict[str, list[Any]], bootstrap: int) -> dict[str, Any]:
    agg = aggregate(acc["counts"])

    def cat(key: str) -> np.ndarray:
        return np.concatenate(acc[key]).astype(float) if acc[key] else np.zeros(0)

    pred, gt, gt_bridged = cat("cpp_pred"), cat("cpp_gt"), cat("cpp_gt_bridged")
    mpred, mgt = cat("cpp_mask_pred"), cat("cpp_mask_gt")
    widths = np.concatenate(acc["width"]) if acc["width"] else np.zeros(0)
    body_widths = cat("width_body")
    overdraw = cat("overdraw")
    cpp_pairs = list(zip(acc["cpp_pred"], acc["cpp_gt"], strict=True))

    def micro(metric: str) -> Callable[[list[Any]], float | None]:
        return lambda counts: aggregate(counts)["micro"][metric]

    def width_mae(values: list[Any]) -> float | None:
        arr = np.concatenate(values) if values else np.zeros(0)
        return float(np.abs(arr).mean()) if arr.size else None

    ci = {
        "f1": bootstrap_interval(acc["counts"], micro("f1"), n_resamples=bootstrap),
        "quality": bootstrap_interval(acc["counts"], micro("quality"), n_resamples=bootstrap),
        "abs_delta_cpp": bootstrap_interval(cpp_pairs, _abs_delta, n_resamples=bootstrap),
        "abs_delta_cpp_gt_bridged": bootstrap_interval(
            list(zip(acc["cpp_pred"], acc["cpp_gt_bridged"], strict=True)),
            _abs_delta,
            n_resamples=bootstrap,
        ),
        "cldice": bootstrap_interval(acc["cldice"], mean_of, n_resamples=bootstrap),
        "cliou": bootstrap_interval(acc["cliou"], pooled_cl_iou, n_resamples=bootstrap),
        "dilated_f1": bootstrap_interval(acc["dil_f1"], pooled_dilated_f1, n_resamples=bootstrap),
        "width_mae_px": bootstrap_interval(acc["width"], width_mae, n_resamples=bootstrap),
    }
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
        "cpp_gt_bridged_mean": float(gt_bridged.mean()) if gt_bridged.size else None,
        "abs_delta_cpp_gt_bridged_mean": (
            float(np.abs(pred - gt_bridged).mean()) if pred.size else None
        ),
        "cpp_mask_pred_mean": float(mpred.mean()) if mpred.size else None,
        "cpp_mask_gt_mean": float(mgt.mean()) if mgt.size else None,
        "abs_delta_cpp_mask_mean": float(np.abs(mpred - mgt).mean()) if mpred.size else None,
        "cldice_mean": float(np.mean(acc["cldice"])) if acc["cldice"] else 0.0,
        "betti0_error_mean": float(np.mean(acc["betti0"])) if acc["betti0"] else 0.0,
        "cliou": pooled_cl_iou(acc["cliou"]) if acc["cliou"] else None,
        "dilated_f1": pooled_dilated_f1(acc["dil_f1"]) if acc["dil_f1"] else None,
        "width_mae_px": float(np.abs(widths).mean()) if widths.size else None,
        "width_bias_px": float(widths.mean()) if widths.size else None,
        "width_n_px": int(widths.size),
        "width_body_mae_px": float(np.abs(body_widths).mean()) if body_widths.size else None,
        "width_body_bias_px": float(body_widths.mean()) if body_widths.size else None,
        "mask_overdraw_median": float(np.median(overdraw)) if overdraw.size else None,
        "bridges": int(np.sum(acc["bridges"])) if acc["bridges"] else 0,
        "ci95": ci,
    }


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table of the headline numbers, then their bootstrap 95 % intervals."""
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
        "|ΔCPP| GT bridged",
        "clDice",
        "clIoU",
        "dil. F1",
        "width MAE px",
        "body width MAE px",
        "mask/image width",
    ]
    rows, intervals = [], []
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
                r.get("abs_delta_cpp_gt_bridged_mean"),
                r["cldice_mean"],
                r["cliou"],
                r["dilated_f1"],
                r["width_mae_px"],
                r["width_body_mae_px"],
                r["mask_overdraw_median"],
            ]
        )
        ci = r.get("ci95", {})
        shown = ", ".join(f"{k} {v[0]:.3f}-{v[1]:.3f}" for k, v in ci.items() if v is not None)
        intervals.append(f"  {name}: {shown}")
    table = [cols] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(str(r[i])) for r in table) for i in range(len(cols))]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    cpp = results["cpp"]
    post = "crack layer as process writes it" if results.get("postprocess") else "raw threshold"
    head = (
        f"model {results['model_id']} (sha256 {results['sha256'][:12]}), threshold "
        f"{results['threshold_px']} px, {post}, halo {results.get('halo_px', 0)} px"
        f"{', TTA' if results.get('tta') else ''}; slack {results['slack_px']} px, "
        f"{results['variant']} completeness, micro over images; CPP on centrelines: patch "
        f"{cpp['patch_px']} px, fragments >= {cpp['min_length_px']} px; clIoU at "
        f"{results['cliou_tolerance_px']} px"
    )
    tail = [f"bootstrap 95 % intervals ({results['bootstrap']} resamples of images):", *intervals]
    return "\n".join([head, lines[0], "-" * len(lines[0]), *lines[1:], *tail])
