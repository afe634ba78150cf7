"""Fine-tune a model on processed surveys whose crack layer was corrected in QGIS.

The tool behind ``cracksurvey finetune``: the field loop is process, review the cracks in QGIS
(delete false ones, draw missed ones, mark the reviewed areas), fine-tune, process again.

- Samples: :mod:`cracksurvey.train.edits` (what the corrections say) and
  :mod:`cracksurvey.train.survey_samples` (targets; crops lie entirely inside reviewed areas).
- Start: the given weights (default: the shipped model), same architecture, BatchNorm frozen
  (running statistics and all: a few hundred small batches of one survey must not re-estimate
  the statistics of the parent's training data; the affine parameters still train).
- Recipe: the parent card's recipe gives the loss weights, the augmentations and the crop size;
  the steps, batch size and learning rate (Adam, constant) are the fine-tune's own.
- Threshold: by default recalibrated on the reviewed areas after fine-tuning (the best relaxed
  quality over the sweep of the training loop's calibration): fine-tuning can shift the
  distance map far from the parent's threshold. It is an in-sample choice (the areas it trained
  on); ``threshold="keep"`` keeps the parent's. The lineage records the reviewed areas'
  quality before and after.
- Output: ``RUN/model.safetensors`` + ``model.json`` (card with ``lineage``: parent id and
  SHA-256, surveys with their GeoPackage checksum and edit counts, sample counts, settings),
  ``RUN/finetune.json`` (the same plus the loss history) and, per sample,
  ``RUN/samples/<survey>/<image stem>_target.tif``: what training saw, over the image (0
  reviewed, no crack; 1 crack body; 2 centreline; 255 not reviewed).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from affine import Affine

from ..errors import ConfigError, CrackSurveyWarning, OutputExistsError
from ..model import ModelCard, TernausNet, load_model, save_model
from .data import MixedCrops
from .edits import match_survey_edits
from .loop import CALIBRATION_SWEEP
from .losses import combined_loss
from .recipe import TrainConfig, config_from_dict
from .survey_samples import SurveySample, SurveySource, build_sample, sample_counts, target_classes
from .topo import set_threads

log = logging.getLogger(__name__)

__all__ = ["finetune_from_surveys", "finetune_steps", "freeze_batchnorm"]

ProgressFactory = Callable[[int, str], Any]
FINETUNE_JSON = "finetune.json"
SAMPLES_DIR = "samples"


def freeze_batchnorm(model: TernausNet) -> TernausNet:
    """Train mode, but every BatchNorm in eval mode (its running statistics stay as they are)."""
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    return model


def finetune_steps(
    model: TernausNet,
    crops: MixedCrops,
    card: ModelCard,
    recipe: TrainConfig,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: ProgressFactory | None = None,
) -> list[dict[str, float]]:
    """Adam steps on crops (BatchNorm frozen); returns each step's loss terms.

    The crops, their augmentations and the model's initial randomness come from ``seed``:
    the same inputs give the same weights on the same machine.
    """
    device = next(model.parameters()).device
    bf16 = device.type == "cuda"
    mean = torch.tensor(card.mean)[:, None, None]
    std = torch.tensor(card.std)[:, None, None]
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    freeze_batchnorm(model)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    history = []
    bar = progress(steps, "fine-tune") if progress else None
    for _ in range(steps):
        images, distance, body = crops.batch(batch_size, rng)
        x = ((torch.from_numpy(images) - mean) / std).to(device)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x.contiguous(memory_format=torch.channels_last))
        loss, terms = combined_loss(
            out.float(),
            torch.from_numpy(distance).to(device),
            torch.from_numpy(body).to(device),
            recipe.loss,
        )
        loss.backward()
        optimizer.step()
        history.append({**terms, "total": float(loss.detach())})
        if bar is not None:
            bar.set_postfix(loss=f"{history[-1]['total']:.3g}", refresh=False)
            bar.update(1)
    if bar is not None:
        bar.close()
    return history


def reviewed_quality(
    model: TernausNet,
    card: ModelCard,
    samples: Sequence[SurveySample],
    thresholds: Sequence[float],
    *,
    slack_px: float = 5.0,
) -> dict[float, float | None]:
    """Relaxed micro quality (Wiedemann) on the reviewed areas, per distance threshold.

    The network runs on each sample window as in processing (tiles with a halo, fp32);
    predictions and crack bodies outside the reviewed areas are ignored.
    """
    from ..config import TilingConfig
    from ..evaluation.metrics import aggregate, relaxed_counts
    from ..tiling import predict_tiled

    tiling = TilingConfig()
    device = next(model.parameters()).device
    model.eval()
    counts: dict[float, list[Any]] = {t: [] for t in thresholds}
    for s in samples:
        distance, _ = predict_tiled(
            s.image,
            model,
            card,
            core_px=tiling.core_px,
            halo_px=tiling.halo_px,
            device=device,
            border=tiling.border,
        )
        truth = s.body & s.reviewed
        for t in thresholds:
            counts[t].append(relaxed_counts((distance <= t) & s.reviewed, truth, slack_px=slack_px))
    return {t: aggregate(c)["micro"]["quality"] for t, c in counts.items()}


def _best(quality: Mapping[float, float | None]) -> float:
    return max(quality, key=lambda t: -1.0 if quality[t] is None else float(quality[t] or 0.0))


def _labels(survey_dirs: Sequence[Path]) -> list[str]:
    """Unique survey labels from the survey folders' names."""
    labels: list[str] = []
    for path in survey_dirs:
        base = label = path.name or "survey"
        n = 2
        while label in labels:
            label, n = f"{base}-{n}", n + 1
        labels.append(label)
    return labels


def _mean_terms(history: Sequence[Mapping[str, float]]) -> dict[str, float]:
    keys = sorted({k for h in history for k in h})
    return {k: float(np.mean([h[k] for h in history if k in h])) for k in keys}


def finetune_from_surveys(
    out_dirs: Sequence[str | Path],
    run_dir: str | Path,
    *,
    weights: str | Path | None = None,
    steps: int = 200,
    batch_size: int = 8,
    lr: float = 1e-4,
    crop_px: int | None = None,
    crack_share: float = 0.5,
    default_width_mm: float = 1.0,
    threshold: Literal["calibrate", "keep"] = "calibrate",
    survey_dirs: Mapping[str, str | Path] | None = None,
    seed: int = 0,
    threads: int = 0,
    overwrite: bool = False,
    progress: ProgressFactory | None = None,
) -> dict[str, Any]:
    """Fine-tune a model on the reviewed areas of edited surveys; write it with its lineage.

    Parameters
    ----------
    out_dirs : sequence of str or Path
        Output folders of ``cracksurvey process`` whose cracks.gpkg was edited.
    run_dir : str or Path
        Folder for the model, its card, finetune.json and the sample targets.
    weights : str or Path, optional
        Weights to start from (``.safetensors`` with its card); default the shipped model.
    steps, batch_size : int
        Optimiser steps and crops per step.
    lr : float
        Adam learning rate (constant).
    crop_px : int, optional
        Crop side (a multiple of 32); default the parent recipe's ``crop_px``.
    crack_share : float
        Share of crops centred on a crack.
    default_width_mm : float
        Crack body width of cracks without a width attribute (with a warning).
    threshold : {'calibrate', 'keep'}
        ``calibrate``: the distance threshold with the best relaxed quality on the reviewed
        areas after fine-tuning (the areas it trained on: an in-sample choice, but the only
        truth there is, and fine-tuning can shift the distance map a lot); ``keep``: the
        parent's calibrated threshold.
    survey_dirs : mapping of str to str or Path, optional
        ``{out_dir: survey_dir}`` for surveys whose folder moved since they were processed.
    seed : int
        Seed of the crops, augmentations and initial randomness.
    threads : int
        CPU threads (0: torch's default).
    overwrite : bool
        Replace a previous fine-tuned model in ``run_dir``.
    progress : callable, optional
        ``progress(total_steps, description)`` returns a tqdm-like bar (the CLI owns it).

    Returns
    -------
    dict
        ``model`` (path), ``model_id``, ``sha256``, ``lineage``, ``history`` summary.

    Raises
    ------
    OutputExistsError
        ``run_dir`` holds a model and ``overwrite`` is False.
    DatasetError, GeoreferenceError
        Unusable edits (see :func:`cracksurvey.train.edits.match_survey_edits`), moved
        images, or no reviewed area large enough for a crop.
    """
    from ..io.edits import read_image_window, read_survey_edits, write_target_raster
    from ..model import default_weights_path, sha256_file

    run = Path(run_dir)
    if (run / "model.safetensors").exists() and not overwrite:
        raise OutputExistsError(
            f"{run} already holds a fine-tuned model; pass --overwrite to replace it or choose "
            "another --run"
        )
    if steps < 1 or batch_size < 1 or not lr > 0:
        raise ConfigError(f"steps={steps}, batch_size={batch_size}, lr={lr}: must be positive")
    t0 = time.perf_counter()
    shutil.rmtree(run / SAMPLES_DIR, ignore_errors=True)  # a previous run's targets
    if threads:
        torch.set_num_threads(threads)
    set_threads(torch.get_num_threads())
    parent_path = Path(weights) if weights is not None else None
    model, parent = load_model(parent_path, fold_bn=False)
    parent_sha = parent.sha256 or sha256_file(
        (parent_path or default_weights_path()).with_suffix(".safetensors")
    )
    recipe = (
        config_from_dict(parent.recipe, "parent model card recipe")
        if parent.recipe
        else TrainConfig()
    )
    crop = int(crop_px or recipe.crop_px)
    if crop % parent.input_multiple:
        raise ConfigError(f"crop_px={crop}: must be a multiple of {parent.input_multiple}")

    moved = {Path(k).resolve(): v for k, v in (survey_dirs or {}).items()}
    edited = [read_survey_edits(d, survey_dir=moved.get(Path(d).resolve())) for d in out_dirs]
    labels = _labels([e.survey_dir for e in edited])
    samples: list[SurveySample] = []
    surveys = []
    for label, survey in zip(labels, edited):
        edits = match_survey_edits(
            label,
            survey.layers,
            survey.records,
            survey.processed_cracks,
            source=str(survey.gpkg),
            default_width_mm=default_width_mm,
            margin_px=math.ceil(parent.clip_px) + 1,
        )
        for line in edits.warnings:
            warnings.warn(line, CrackSurveyWarning, stacklevel=2)
        own = []
        for item in edits.images:
            record = survey.records[item.image]
            image, valid = read_image_window(record, item.window)
            sample = build_sample(image, valid, item, clip_px=parent.clip_px)
            row0, _, col0, _ = item.window
            assert record.georef is not None
            write_target_raster(
                run / SAMPLES_DIR / label / f"{record.stem}_target.tif",
                target_classes(sample),
                record.georef.transform @ Affine.translation(col0, row0),
                record.georef.crs,
            )
            own.append(sample)
        samples += own
        surveys.append(
            {
                "survey": label,
                "out_dir": str(survey.out_dir.resolve()),
                "survey_dir": str(survey.survey_dir.resolve()),
                "geopackage_sha256": survey.gpkg_sha256,
                "processed_with": (survey.run.get("model") or {}).get("sha256"),
                "images": [s.name.split("/", 1)[1] for s in own],
                "edits": edits.counts,
                "samples": sample_counts(own, clip_px=parent.clip_px),
            }
        )
    source = SurveySource(samples, crack_share=crack_share)
    positions = source.check(crop)
    crops = MixedCrops([source], [1.0], crop_px=crop, aug=recipe.augment)
    before = reviewed_quality(model, parent, samples, [parent.threshold_px])
    history = finetune_steps(
        model,
        crops,
        parent,
        recipe,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        progress=progress,
    )
    sweep = CALIBRATION_SWEEP if threshold == "calibrate" else (parent.threshold_px,)
    after = reviewed_quality(model, parent, samples, sorted({*sweep, parent.threshold_px}))
    chosen = _best(after) if threshold == "calibrate" else parent.threshold_px

    lineage = {
        "parent": {
            "model_id": parent.model_id,
            "sha256": parent_sha,
            "weights": str(parent_path) if parent_path else "shipped",
            "lineage": parent.lineage,
        },
        "surveys": surveys,
        "samples": {
            **sample_counts(samples, clip_px=parent.clip_px),
            "crop_positions": positions,
            "crops_trained": steps * batch_size,
        },
        "threshold": {
            "parent_px": parent.threshold_px,
            "threshold_px": chosen,
            "chosen": "best relaxed quality (slack 5 px) on the reviewed areas"
            if threshold == "calibrate"
            else "the parent's, kept",
            "reviewed_quality_parent": before[parent.threshold_px],
            "reviewed_quality_at_parent_threshold": after[parent.threshold_px],
            "reviewed_quality": after[chosen],
        },
        "finetune": {
            "steps": steps,
            "batch_size": batch_size,
            "lr": lr,
            "crop_px": crop,
            "crack_share": crack_share,
            "default_width_mm": default_width_mm,
            "seed": seed,
            "batchnorm": "frozen",
            "optimizer": "adam, constant lr",
        },
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    card = dataclasses.replace(
        parent,
        model_id=f"{parent.model_id}+{'+'.join(labels)}",
        sha256="",
        threshold_px=float(chosen),
        metrics={},
        notes={"finetuned_from": parent.model_id},
        lineage=lineage,
    )
    card = save_model(model.eval().cpu(), card, run / "model")
    n = max(1, len(history) // 10)
    summary = {
        "model": str(run / "model.safetensors"),
        "model_id": card.model_id,
        "sha256": card.sha256,
        "threshold_px": card.threshold_px,
        "lineage": lineage,
        "loss": {"first_steps": _mean_terms(history[:n]), "last_steps": _mean_terms(history[-n:])},
        "history": history,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    (run / FINETUNE_JSON).write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return summary
